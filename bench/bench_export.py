"""Export time and size per stage: measured on the tiny base, computed at 7B shapes.

Runs short in-process runs (the real ServerApp and ClientApp) that export every
stage, then times the export of each stage again from its own arrays (median of
``--repeats``; the re-export must write the same bytes) and measures the folder.
The 7B sizes follow from LLaVA-1.5-7B's shapes (float32, LoRA on the 32 layers'
gate/up/down projections, the paper's r = 64, E = 8, a trained projector).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.common import record, table_header
from fcit_flower.config import RunConfig
from fcit_flower.export.layout import BASE_DIR, folder_bytes, stage_dir
from fcit_flower.export.stage import export_stage
from fcit_flower.inprocess import run_inprocess, small_run_config
from fcit_flower.methods.registry import get_method
from fcit_flower.models.tiny_spec import TINY_BASE_ENV
from fcit_flower.runtime import prepare_runtime

METHODS = ("finetune", "disco", "olora", "moelora")
MB = 1e6
# LLaVA-1.5-7B: 32 layers, hidden 4096, MLP 11008; projector 1024 -> 4096 -> 4096.
LAYERS, HIDDEN, MLP = 32, 4096, 11008
LORA_PARAMS_PER_RANK = LAYERS * 3 * (HIDDEN + MLP)  # A and B of gate, up, down
PROJECTOR_PARAMS = 1024 * 4096 + 4096 + 4096 * 4096 + 4096
ROUTER_PARAMS_PER_EXPERT = LAYERS * (2 * HIDDEN + MLP)  # inputs of gate, up, down


def seven_b_megabytes(method: str, stage: int, *, rank: int = 64, e: int = 8) -> float:
    """Adapter files after ``stage`` (1-based) at LLaVA-1.5-7B shapes, float32.

    Hom task setting: DISCO opens one subspace per stage, O-/M-LoRA one block per
    stage; the projector is trained (the paper's setting); the base is referenced
    by path, not copied.
    """
    piece = LORA_PARAMS_PER_RANK * rank // e  # one subspace / block / expert
    adapter = {
        "finetune": LORA_PARAMS_PER_RANK * rank,
        "disco": stage * piece + e * 768,  # + CLIP identity tokens
        "olora": stage * piece,
        "moelora": e * piece + e * ROUTER_PARAMS_PER_EXPERT,
    }[method]
    return 4 * (adapter + PROJECTOR_PARAMS) / MB


def measure(method: str, stages: int, results: Path, repeats: int) -> list[str]:
    """Table rows (one per stage) of one method's run."""
    values = {
        **small_run_config(clients=4, per_round=2, train_size=24, test_size=5),
        "num-stages": stages,
        "method": method,
        "results-dir": str(results),
        "run-name": method,
    }
    run_inprocess(values)
    config = RunConfig.from_mapping(values)
    runtime = prepare_runtime(config)
    handler = get_method(method)
    rows = []
    for stage in range(stages):
        folder = stage_dir(config.run_dir, stage + 1)
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        arrays = handler.import_arrays(config, folder)
        info = json.loads((folder / "export.json").read_text())
        row = list(info["accuracy_row"].values())
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            export_stage(
                handler,
                config,
                runtime,
                arrays,
                schedule=handler.schedule(runtime.schedule),
                stage=stage,
                row=row,
            )
            seconds.append(time.perf_counter() - start)
        after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        assert after == before, f"{method} stage {stage + 1}: re-export differs"
        total = folder_bytes(folder)
        base = folder_bytes(folder / BASE_DIR)
        rows.append(
            f"| {method} | {stage + 1} | {sorted(seconds)[len(seconds) // 2]:.3f} | "
            f"{(total - base) / 1e3:.1f} | {total / 1e3:.1f} | "
            f"{seven_b_megabytes(method, stage + 1):.0f} |"
        )
    return rows


def main() -> None:
    """Measure every method, print the table and append it to BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    lines = table_header(
        "method",
        "stage",
        "export s (tiny)",
        "folder KB without base/ (tiny)",
        "folder KB with base (tiny)",
        "7B MB (computed)",
    )
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            lines += measure(method, args.stages, Path(tmp), args.repeats)
            print(lines[-1], flush=True)
    base = os.environ.get(TINY_BASE_ENV, "standard")
    body = "\n".join(
        [
            f"Tiny base `{base}`, 4 clients, 2 per round, 2 rounds a stage, "
            f"train-size 24; export time = median of {args.repeats} re-exports of "
            "the stage's arrays (each wrote the same bytes as the run's own export). "
            "7B: float32 adapter files at LLaVA-1.5-7B shapes, r = 64, E = 8, "
            "projector trained (84 MB of it), Hom (one new DISCO subspace / "
            "O-LoRA block per stage); the base is referenced by path, not copied.",
            "",
            *lines,
        ]
    )
    print(body)
    if not args.no_record:
        record("Export time and size per stage", body)


if __name__ == "__main__":
    main()
