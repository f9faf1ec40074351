"""The run-config of the tests' short runs on an offline LLaVA checkpoint."""

from pathlib import Path
from typing import Any


def llava_run_config(
    checkpoint: Path | str, results_dir: Path, *, num_stages: int
) -> dict[str, Any]:
    """Finetune on the checkpoint: 2 clients, 1 round a stage, a few tiny steps."""
    return {
        "method": "finetune",
        "model": "llava",
        "model-path": str(checkpoint),
        "num-clients": 2,
        "clients-per-round": 2,
        "rounds-per-stage": 1,
        "num-stages": num_stages,
        "train-size": 8,
        "test-size": 2,
        "max-new-tokens": 2,
        "lora-rank": 8,
        "num-subspaces": 4,
        "batch-size": 4,
        "results-dir": str(results_dir),
        "run-name": "llava",
    }
