"""End to end through Flower's simulation engine (a private SuperLink + Ray)."""

import json
from pathlib import Path

import psutil
import pytest

from fcit_flower.inprocess import small_run_config
from fcit_flower.launch.simulation import run_simulation_app

APP = Path(__file__).resolve().parents[1]
TINY = small_run_config(
    clients=3, per_round=2, train_size=30, test_size=6, min_client_size=2
)

pytestmark = pytest.mark.flower


def _our_processes():
    # Descendants of this test process only: other Flower runs on a shared machine
    # are not ours to count.
    found = set()
    for process in psutil.Process().children(recursive=True):
        try:
            cmdline = process.cmdline()
        except psutil.Error:
            continue
        if any("flower-superlink" in c or "flwr-simulation" in c for c in cmdline):
            found.add(process.pid)
    return found


@pytest.mark.parametrize("method", ["finetune", "disco"])
def test_tiny_run_completes_through_flower(tmp_path, method):
    before = _our_processes()
    outcome = run_simulation_app(
        APP,
        {**TINY, "method": method, "results-dir": str(tmp_path), "run-name": method},
        num_supernodes=3,
        timeout_s=900,
    )
    assert outcome.completed, outcome.status + "\n" + outcome.log[-3000:]
    metrics = json.loads((tmp_path / method / "metrics.json").read_text())
    assert metrics["complete"] is True
    assert len(metrics["accuracy_matrix"]) == 2
    assert metrics["tasks"] == ["imagenet-r", "arxivqa"]
    for key in ("last", "avg", "bwt"):
        assert isinstance(metrics[key], float)
    assert (
        (tmp_path / method / "accuracy_matrix.csv")
        .read_text()
        .startswith("after_stage")
    )
    if method == "disco":
        routing = json.loads((tmp_path / method / "routing.json").read_text())
        assert routing["assignments"], "DISCO assigned no client to a subspace"
        assert len(routing["slot_tokens"]) >= 1
    # the ServerApp leaves a manifest, plots and a report
    run_dir = tmp_path / method
    assert json.loads((run_dir / "manifest.json").read_text())["data_fingerprints"]
    assert (run_dir / "plots" / "accuracy_matrix.png").stat().st_size > 5000
    assert "plots/forgetting.png" in (run_dir / "report.md").read_text()
    # we stopped exactly what we started
    assert _our_processes() <= before


def test_crashing_server_app_is_reported_as_failed(tmp_path):
    # tau out of range passes the CLI nowhere: the ServerApp itself must fail
    outcome = run_simulation_app(
        APP,
        {**TINY, "tau": 5.0, "results-dir": str(tmp_path)},
        num_supernodes=3,
        timeout_s=600,
    )
    assert not outcome.completed
    assert "failed" in outcome.status
    assert not (tmp_path / "finetune-hom-task-b1-s0" / "metrics.json").exists()
