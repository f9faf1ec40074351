"""Peak resident memory of a ClientApp process during local training (CPU).

Each method runs in a fresh Python process that imports the app, prepares the
runtime (data, base model) and handles one TRAIN message of the default config
(stage 1, client 0, the arrays the server's strategy would send). Reports the peak
RSS (``ru_maxrss``) after start-up and after the training message, so the growth is
what training costs on top of a loaded client. On a GPU machine the 4-bit 7B path
is measured by ``scripts/gpu_smoke.py`` (peak GPU memory) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import record, table_header

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import MessageType
from flwr.supercore.task_identity import TaskIdentity
from fcit_flower.client_app import app
from fcit_flower.config import RunConfig
from fcit_flower.methods.base import ServerSetup
from fcit_flower.methods.registry import get_method
from fcit_flower.protocol import subspace_arrays, to_record
from fcit_flower.runtime import prepare_runtime
from fcit_flower.strategies.continual import Federation

TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
values = {"method": sys.argv[1]}
config = RunConfig.from_mapping(values)
runtime = prepare_runtime(config)
federation = Federation.from_config(config, {1: 0})
setup = ServerSetup(config=config, runtime=runtime, federation=federation)
strategy, arrays = get_method(config.method).build_server(setup)
if sys.argv[1] == "disco":
    strategy.current = dict(arrays)
    for key, value in strategy.init_subspace(0).items():
        arrays["slot0/" + key] = value
    arrays = subspace_arrays(arrays, 0)
kb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = kb()
config_record = ConfigRecord({"stage": 0, "server-round": 1, "attempt": 0})
if sys.argv[1] == "disco":
    config_record["subspace"] = 0
message = Message(
    content=RecordDict({"arrays": to_record(arrays), "config": config_record}),
    dst_node_id=1,
    message_type=MessageType.TRAIN,
)
context = Context(run_id=1, node_id=1, node_config={"partition-id": 0},
                  state=RecordDict(), run_config=values)
reply = app(message, context)
assert not reply.has_error(), reply.error
print(json.dumps({"start_mb": started / 1024, "peak_mb": kb() / 1024,
                  "samples": reply.content["metrics"]["num-examples"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="finetune,disco,ewc,olora,moelora")
    args = parser.parse_args()
    lines = table_header(
        "method",
        "RSS after start-up MB",
        "peak RSS after training MB",
        "growth MB",
        "samples",
    )
    for method in args.methods.split(","):
        out = (
            subprocess.run(
                [sys.executable, "-c", CHILD, method],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        row = json.loads(out)
        lines.append(
            f"| {method} | {row['start_mb']:.0f} | {row['peak_mb']:.0f} | "
            f"{row['peak_mb'] - row['start_mb']:.0f} | {row['samples']} |"
        )
        print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        "\n\nTiny model, CPU, default config, one TRAIN message (stage 1, client 0). "
        "No GPU was lent to this task, so the 4-bit 7B figure (scripts/gpu_smoke.py) "
        "is not measured."
    )
    print(body)
    record("Client memory: peak RSS of a ClientApp process (CPU)", body)


if __name__ == "__main__":
    main()
