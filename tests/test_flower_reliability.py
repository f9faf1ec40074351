"""Failures and resume through Flower's simulation engine (private SuperLink, Ray)."""

import json
from pathlib import Path

import numpy as np
import pytest

from fcit_flower.checkpoint import CheckpointStore
from fcit_flower.cli import main as cli_main
from fcit_flower.launch.simulation import run_simulation_app

APP = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.flower


def test_dropout_run_completes_then_resumes_through_flower(tmp_path):
    config = {
        "method": "finetune",
        "num-clients": 4,
        "clients-per-round": 3,
        "rounds-per-stage": 2,
        "num-stages": 2,
        "train-size": 40,
        "test-size": 6,
        "fault-rate": 0.3,
        "results-dir": str(tmp_path),
        "run-name": "drop",
    }
    outcome = run_simulation_app(APP, config, num_supernodes=4, timeout_s=900)
    assert outcome.completed, outcome.status + "\n" + outcome.log[-3000:]
    run_dir = tmp_path / "drop"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] is True
    failures = [r for r in metrics["rejected_uploads"] if r["kind"] == "error"]
    assert metrics["client_failures"] == len(failures) > 0
    assert all("injected fault" in r["reason"] for r in failures)
    assert "client failed" in outcome.log

    # Interrupt it after the fact: drop what was written after stage 2 round 1.
    store = CheckpointStore(run_dir / "checkpoints")
    final = store.latest().arrays
    for path in store.files():
        if path.name.endswith(("-s1-r2.npz", "-s1-r2-end.npz")):
            path.unlink()
    resume_from = store.latest().path.name
    assert resume_from.endswith("-s1-r1.npz")
    assert cli_main(["resume", str(run_dir), "--quiet", "--timeout", "900"]) == 0
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["accuracy_matrix"] == metrics["accuracy_matrix"]
    assert resumed["resumed_from"] == [resume_from]
    again = store.latest().arrays
    for key in final:
        np.testing.assert_array_equal(final[key], again[key], err_msg=key)
