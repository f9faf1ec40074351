"""Peak resident memory of a ClientApp process during local training (CPU).

Each method runs in a fresh Python process that imports the app, prepares the
runtime (data, base model) and handles one TRAIN message of the default config
(stage 1, client 0, the arrays the server's strategy would send). Reports the peak
RSS (``ru_maxrss``) after start-up and after the training message, so the growth is
what training costs on top of a loaded client. On a GPU machine the 4-bit 7B path
is measured by ``scripts/gpu_smoke.py`` (peak GPU memory) instead.

``--mid-size``: the same on a randomly initialised LLaVA of a few hundred MB
(:data:`MID_SIZE`, float32), with the server and the client in separate processes
(:mod:`bench.mid_size_memory`): the server's peak (initial arrays, evaluation model,
a few decoded test items) and the client's (one TRAIN message). ``--before REV``
adds the same rows for an older commit, exported with ``git archive``, so one
invocation compares the two.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import record, table_header
from bench.mid_size_memory import CLIENT, SERVER

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


# A mid-size LLaVA: ~103 M parameters (~400 MB in float32), 8 Llama layers.
MID_SIZE = {
    "text_hidden": 1024,
    "text_intermediate": 2816,
    "text_layers": 8,
    "text_heads": 16,
    "vision_hidden": 256,
    "vision_layers": 2,
    "vision_heads": 4,
    "image_size": 64,
    "patch_size": 16,
}
MID_RUN = {
    "model": "llava",
    "num-clients": 2,
    "clients-per-round": 2,
    "rounds-per-stage": 1,
    "num-stages": 2,
    "train-size": 32,
    "test-size": 2,
    "max-new-tokens": 2,
    "num-subspaces": 4,
    "moelora-experts": 4,
}


# glibc raises its mmap threshold as large blocks are freed, then serves them from
# a heap it keeps: the peak RSS then holds freed activations. A fixed threshold
# returns them at once, so that peak is close to the live tensors' peak.
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def run_child(
    code: str, tree: Path, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``code`` with ``python -c`` in source ``tree``; its last JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tree,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"child failed in {tree}:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def export_tree(rev: str, folder: Path) -> str:
    """Write commit ``rev`` of this repository into ``folder``; its short hash."""
    folder.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", rev], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return subprocess.run(
        ["git", "rev-parse", "--short", rev],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def mid_size(methods: list[str], before: str, checkpoint: str) -> str:
    """Rows of the mid-size LLaVA: client and server peak RSS per tree."""
    lines = table_header(
        "method",
        "tree",
        "client RSS after imports MB",
        "client peak MB",
        "client peak, fixed malloc threshold MB",
        "trained MB",
        "activations MB",
        "client need MB",
        "client (peak - imports) / need",
        "same, fixed threshold",
        "server peak MB",
        "server (peak - imports) / base",
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not checkpoint:
            from fcit_flower.models.llava_checkpoint import (
                LlavaShape,
                write_llava_checkpoint,
            )
            from fcit_flower.tasks.mini_fcit import vocabulary_texts

            shape = LlavaShape(**MID_SIZE)
            checkpoint = str(
                write_llava_checkpoint(work / "mid", vocabulary_texts(), shape)
            )
        trees = []
        if before:
            trees.append((f"before {export_tree(before, work / 'before')}", work))
            trees[-1] = (trees[-1][0], work / "before")
        trees.append(("after (this tree)", ROOT))
        base_mb = 0.0
        for method in methods:
            values = json.dumps({**MID_RUN, "method": method, "model-path": checkpoint})
            for label, tree in trees:
                arrays = str(work / "arrays.pkl")
                server = run_child(SERVER, tree, values, arrays)
                client = run_child(CLIENT, tree, values, arrays)
                fixed = run_child(CLIENT, tree, values, arrays, env=FIXED_MALLOC)
                base_mb = client["base_mb"]
                # The goal: base + adapter + its gradient + AdamW's two
                # moments + activations.
                need = base_mb + 4 * client["trained_mb"] + client["activation_mb"]
                used = client["peak_mb"] - client["imports_mb"]
                used_fixed = fixed["peak_mb"] - fixed["imports_mb"]
                server_used = server["peak_mb"] - server["imports_mb"]
                lines.append(
                    f"| {method} | {label} | {client['imports_mb']:.0f} | "
                    f"{client['peak_mb']:.0f} | {fixed['peak_mb']:.0f} | "
                    f"{client['trained_mb']:.1f} | {client['activation_mb']:.0f} | "
                    f"{need:.0f} | {used / need:.2f}x | {used_fixed / need:.2f}x | "
                    f"{server['peak_mb']:.0f} | "
                    f"{server_used / base_mb:.2f}x |"
                )
                print(lines[-1], flush=True)
    shape_line = ", ".join(f"{k}={v}" for k, v in MID_SIZE.items())
    return "\n".join(lines) + (
        f"\n\nMid-size random LLaVA ({shape_line}; float32 base {base_mb:.0f} MB "
        "of parameters and buffers), run-config "
        + json.dumps(MID_RUN)
        + ". Client: one TRAIN message (stage 1, client 0) in a fresh process; "
        "need = base + 4 x trained (adapter, its gradient, AdamW's two moments) "
        "+ activations (bytes autograd saved for the largest backward pass); "
        "the fixed-threshold run sets MALLOC_MMAP_THRESHOLD_=131072. Server: a "
        "fresh process builds the initial arrays and the evaluation model and "
        "decodes 2 test items."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="finetune,disco,ewc,olora,moelora")
    parser.add_argument("--mid-size", action="store_true", help="mid-size LLaVA")
    parser.add_argument("--before", default="", help="also measure this commit")
    parser.add_argument("--checkpoint", default="", help="reuse a written LLaVA")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.mid_size:
        body = mid_size(args.methods.split(","), args.before, args.checkpoint)
        print(body)
        if not args.no_record:
            record("Client and server memory: one base per process (CPU)", body)
        return
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
    if not args.no_record:
        record("Client memory: peak RSS of a ClientApp process (CPU)", body)


if __name__ == "__main__":
    main()
