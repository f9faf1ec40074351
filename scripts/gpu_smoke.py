"""GPU smoke test of the real-model path: 4-bit QLoRA LLaVA, every method.

On a CUDA machine this writes a random LLaVA at LLaVA-1.5-7B's *layer shapes*
(LLaMA hidden 4096, MLP 11008, 32 heads; 2 layers instead of 32; a small CLIP tower at
336 px / patch 14, i.e. the real 576 image tokens), or uses a local checkpoint
(``--model-path``, e.g. ``llava-hf/llava-1.5-7b-hf`` downloaded beforehand), then, for
each method (finetune, ewc, olora, mlora, moelora, disco, mtl by default), runs the
real ServerApp (the method's strategy, evaluation) against the real ClientApp through
the in-process grid: 2 clients x 2 rounds x 2 stages with 4-bit NF4 QLoRA. Each
method runs in its own process (a fresh CUDA context, so peak memory is that
method's alone) and prints one line: peak GPU memory, seconds per training step,
bytes per TRAIN message down and up, and wall time.

Without a CUDA GPU it prints why and exits 0 (``--cpu`` runs the same path on CPU at
small dimensions: the CPU twin used by the tests).

Usage::

    python scripts/gpu_smoke.py                # CUDA, 7B layer shapes, 2 layers
    python scripts/gpu_smoke.py --methods disco,finetune
    python scripts/gpu_smoke.py --model-path /models/llava-1.5-7b-hf
    python scripts/gpu_smoke.py --cpu          # the CPU twin (tiny shapes)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context, Message, RecordDict
from flwr.common import MessageType
from flwr.supercore.task_identity import TaskIdentity

from fcit_flower.client_app import app as client_app
from fcit_flower.inprocess import InProcessGrid
from fcit_flower.models.llava_checkpoint import LlavaShape, write_llava_checkpoint
from fcit_flower.protocol import METRICS_KEY, NUM_EXAMPLES
from fcit_flower.server_app import main as server_main
from fcit_flower.tasks.mini_fcit import vocabulary_texts

#: LLaVA-1.5-7B's language-model layer shapes, 2 layers; a small CLIP tower that
#: still yields the real 576 image tokens per image.
SEVEN_B_LAYERS = LlavaShape(
    text_hidden=4096,
    text_intermediate=11008,
    text_layers=2,
    text_heads=32,
    vision_hidden=64,
    vision_layers=1,
    vision_heads=4,
    image_size=336,
    patch_size=14,
)
TINY = LlavaShape()
METHODS = ("finetune", "ewc", "olora", "mlora", "moelora", "disco", "mtl")


class MeteredGrid(InProcessGrid):
    """The in-process grid, timing every TRAIN call and counting array bytes."""

    def __init__(self, num_nodes: int, run_config: dict[str, Any]) -> None:
        super().__init__(client_app, num_nodes, run_config)
        self.train_seconds: list[float] = []
        self.train_steps: list[int] = []
        self.bytes_down: list[int] = []
        self.bytes_up: list[int] = []
        self.batch_size = int(run_config["batch-size"])

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Call the ClientApp for each message; meter the TRAIN ones."""
        replies = []
        for message in messages:
            start = time.perf_counter()
            (reply,) = super().send_and_receive([message], timeout=timeout)
            if message.metadata.message_type == MessageType.TRAIN:
                _synchronize()
                self.train_seconds.append(time.perf_counter() - start)
                metrics = reply.content.metric_records[METRICS_KEY]
                examples = int(metrics[NUM_EXAMPLES])  # type: ignore[arg-type]
                self.train_steps.append(max(1, math.ceil(examples / self.batch_size)))
                self.bytes_down.append(_array_bytes(message))
                self.bytes_up.append(_array_bytes(reply))
            replies.append(reply)
        return replies


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _array_bytes(message: Message) -> int:
    return sum(
        array.numpy().nbytes
        for record in message.content.array_records.values()
        for array in record.values()
    )


def run_smoke(
    workdir: Path,
    *,
    method: str = "disco",
    device: str,
    shape: LlavaShape = TINY,
    model_path: str = "",
    train_size: int = 16,
    test_size: int = 2,
    batch_size: int = 4,
    max_new_tokens: int = 8,
) -> dict[str, Any]:
    """Run ``method`` with 4-bit QLoRA on a LLaVA: 2 clients x 2 rounds x 2 stages.

    Returns
    -------
    dict
        ``method``, ``peak_gpu_gib`` (None on CPU; the process's peak, so run one
        method per process for a per-method figure), ``step_seconds`` (mean over
        training messages; None for the centralized ``mtl``), ``bytes_down`` /
        ``bytes_up`` per TRAIN message, ``train_steps``, ``accuracy_matrix``,
        ``wall_seconds``.
    """
    if not model_path:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model_path = str(
            write_llava_checkpoint(
                workdir / "checkpoint", vocabulary_texts(), shape, dtype=dtype
            )
        )
    config: dict[str, bool | float | int | str] = {
        "method": method,
        "model": "llava",
        "model-path": model_path,
        "quantization": "4bit",
        "torch-dtype": "bfloat16",
        "gradient-checkpointing": device == "cuda",
        "device": device,
        "num-clients": 2,
        "clients-per-round": 2,
        "rounds-per-stage": 2,
        "num-stages": 2,
        "train-size": train_size,
        "test-size": test_size,
        "batch-size": batch_size,
        "max-new-tokens": max_new_tokens,
        "lora-rank": 16,
        "num-subspaces": 4,
        "lr": 2e-4,
        "results-dir": str(workdir / "results"),
        "run-name": f"gpu-smoke-{method}",
    }
    # A ServerApp process normally gets its identity from Flower's runtime.
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    grid = MeteredGrid(2, config)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    server_main(
        grid,
        Context(
            run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config
        ),
    )
    wall = time.perf_counter() - start
    metrics_file = workdir / "results" / f"gpu-smoke-{method}" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    steps = sum(grid.train_steps)
    return {
        "method": method,
        "device": device,
        "peak_gpu_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        ),
        "train_messages": len(grid.train_seconds),
        "train_steps": steps,
        "step_seconds": sum(grid.train_seconds) / steps if steps else None,
        "bytes_down": grid.bytes_down,
        "bytes_up": grid.bytes_up,
        "accuracy_matrix": metrics["accuracy_matrix"],
        "wall_seconds": wall,
    }


def _line(result: dict[str, Any]) -> str:
    """One printed line per method."""
    peak = result["peak_gpu_gib"]
    step = result["step_seconds"]
    down, up = result["bytes_down"], result["bytes_up"]
    return (
        f"{result['method']:<8} peak GPU {'n/a' if peak is None else f'{peak:.2f} GiB'}"
        f" | {'central' if step is None else f'{step:.3f} s/step'}"
        f" | bytes per TRAIN message: down {max(down, default=0)},"
        f" up {max(up, default=0)} | wall {result['wall_seconds']:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default="", help="local LLaVA checkpoint")
    parser.add_argument("--cpu", action="store_true", help="CPU twin, tiny shapes")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--train-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_smoke: skipped: no CUDA GPU is visible (use --cpu for the twin)")
        return 0
    device = "cpu" if args.cpu else "cuda"
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    shape = TINY if args.cpu else SEVEN_B_LAYERS
    with tempfile.TemporaryDirectory(prefix="fcit-gpu-smoke-") as tmp:
        workdir = Path(tmp)
        if len(methods) == 1:
            result = run_smoke(
                workdir,
                method=methods[0],
                device=device,
                shape=shape,
                model_path=args.model_path,
                train_size=args.train_size,
                batch_size=args.batch_size,
            )
            print(_line(result), flush=True)
            return 0
        # One process per method: a fresh CUDA context, so each peak is its own.
        model_path = args.model_path or str(
            write_llava_checkpoint(
                workdir / "checkpoint",
                vocabulary_texts(),
                shape,
                dtype=torch.bfloat16 if device == "cuda" else torch.float32,
            )
        )
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        print(f"device: {device} ({name}); LLaVA shape {shape}", flush=True)
        failed = []
        for method in methods:
            command = [
                sys.executable,
                __file__,
                "--methods",
                method,
                "--model-path",
                model_path,
                "--train-size",
                str(args.train_size),
                "--batch-size",
                str(args.batch_size),
                *(["--cpu"] if args.cpu else []),
            ]
            if subprocess.run(command, check=False).returncode != 0:
                failed.append(method)
                print(f"{method:<8} FAILED (its traceback is above)", flush=True)
    if failed:
        print(f"gpu_smoke: failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
