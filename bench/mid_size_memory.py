"""Children of the mid-size memory benchmark: a server and a client process.

Run by :mod:`bench.bench_client_memory` (``--mid-size``) with ``python -c`` in a
source tree (the current one, or an exported older commit for the "before" rows),
so they use only interfaces every measured commit has. Each prints one JSON line.

- :data:`SERVER`: loads the base, builds the method's server side (initial arrays,
  written for the client), then its evaluation model of those arrays, and decodes a
  few test items. Its peak RSS is the server's evaluation footprint.
- :data:`CLIENT`: a fresh ClientApp process that loads the base and handles one
  TRAIN message of those arrays; its peak RSS is the client's.

Memory is read from ``/proc/self/status``: ``VmRSS`` now, ``VmHWM`` the peak.
Trained parameters (for the optimizer's share) are the ``requires_grad``
parameters alive after the message; activations, the bytes autograd saved for the
largest backward pass (storages of no parameter).
"""

from __future__ import annotations

HEAD = r"""
import gc, json, pickle, sys
import torch

def status(key):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)

def tensor_mb(tensors):
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20

from flwr.supercore.task_identity import TaskIdentity
from fcit_flower.config import RunConfig
from fcit_flower.runtime import prepare_runtime

"""

# After every import: the base is loaded from here on.
LOAD = r"""
TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
values = json.loads(sys.argv[1])
arrays_file = sys.argv[2]
config = RunConfig.from_mapping(values)
imports_mb = status("VmRSS")
runtime = prepare_runtime(config)
base = runtime.bundle.model
base_mb = tensor_mb([*base.parameters(), *base.buffers()])
loaded_mb = status("VmHWM")
"""

SERVER = (
    HEAD
    + r"""
from fcit_flower.evaluation import evaluate_state
from fcit_flower.methods.base import ServerSetup
from fcit_flower.methods.registry import get_method
from fcit_flower.protocol import subspace_arrays
from fcit_flower.strategies.continual import Federation
from fcit_flower.tasks.data import test_samples
"""
    + LOAD
    + r"""

method = get_method(config.method)
federation = Federation.from_config(config, {1: 0})
setup = ServerSetup(config=config, runtime=runtime, federation=federation)
strategy, arrays = method.build_server(setup)
sent = dict(arrays)
if config.method == "disco":  # the first TRAIN message: subspace 0
    strategy.current = dict(arrays)
    for key, value in strategy.init_subspace(0).items():
        arrays["slot0/" + key] = value
    sent = subspace_arrays(arrays, 0)
with open(arrays_file, "wb") as handle:
    pickle.dump(sent, handle)
built_mb = status("VmHWM")
evaluated = method.evaluation_model(config, runtime, arrays)
task = runtime.schedule.tasks[0]
tests = {task: test_samples(runtime.root, task, config)}
evaluate_state(config, runtime, evaluated, tests)
print(json.dumps({"imports_mb": imports_mb, "loaded_mb": loaded_mb,
                  "built_mb": built_mb, "peak_mb": status("VmHWM"),
                  "base_mb": base_mb}))
"""
)

CLIENT = (
    HEAD
    + r"""
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import MessageType
from fcit_flower.client_app import app
from fcit_flower.protocol import to_record
"""
    + LOAD
    + r"""

with open(arrays_file, "rb") as handle:
    arrays = pickle.load(handle)
config_record = ConfigRecord({"stage": 0, "server-round": 1, "attempt": 0})
if config.method == "disco":
    config_record["subspace"] = 0
message = Message(
    content=RecordDict({"arrays": to_record(arrays), "config": config_record}),
    dst_node_id=1,
    message_type=MessageType.TRAIN,
)
context = Context(run_id=1, node_id=1, node_config={"partition-id": 0},
                  state=RecordDict(), run_config=values)
# Activations: bytes of the tensors autograd saves for a backward pass (storages
# that are no parameter's), the largest over the passes of the message.
saved, params, activation_mb = {}, set(), [0.0]

def pack(tensor):
    if not params:
        params.update(o.untyped_storage().data_ptr() for o in gc.get_objects()
                      if isinstance(o, torch.nn.Parameter))
    storage = tensor.untyped_storage()
    if storage.data_ptr() not in params:
        saved[storage.data_ptr()] = storage.nbytes()
    return tensor

backward = torch.Tensor.backward

def counted_backward(self, *args, **kwargs):
    activation_mb[0] = max(activation_mb[0], sum(saved.values()) / 2**20)
    saved.clear()
    return backward(self, *args, **kwargs)

torch.Tensor.backward = counted_backward
with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
    reply = app(message, context)
assert not reply.has_error(), reply.error
trained = {id(o): o for o in gc.get_objects()
           if isinstance(o, torch.nn.Parameter) and o.requires_grad}
print(json.dumps({"imports_mb": imports_mb, "loaded_mb": loaded_mb,
                  "peak_mb": status("VmHWM"), "base_mb": base_mb,
                  "trained_mb": tensor_mb(trained.values()),
                  "activation_mb": activation_mb[0],
                  "samples": reply.content["metrics"]["num-examples"]}))
"""
)
