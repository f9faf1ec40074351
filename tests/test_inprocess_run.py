"""The whole ServerApp/ClientApp logic in one process (no Flower runtime)."""

import json

import pytest
from flwr.app import Context, RecordDict

from fcit_flower.client_app import app as client_app
from fcit_flower.inprocess import InProcessGrid, small_run_config
from fcit_flower.server_app import main

TINY = small_run_config(clients=4, per_round=2, train_size=24, test_size=5)


def _run(tmp_path, name, **extra):
    config = {**TINY, **extra, "results-dir": str(tmp_path), "run-name": name}
    grid = InProcessGrid(client_app, config["num-clients"], config)
    main(
        grid,
        Context(
            run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config
        ),
    )
    return json.loads((tmp_path / name / "metrics.json").read_text())


@pytest.mark.parametrize("method", ["finetune", "disco"])
def test_same_seed_same_numbers(tmp_path, method):
    first = _run(tmp_path, "a", method=method)
    second = _run(tmp_path, "b", method=method)
    assert first["accuracy_matrix"] == second["accuracy_matrix"]
    assert first["examples"] == second["examples"]
    _check_report(tmp_path, method)


def _check_report(tmp_path, method):
    """A real run leaves a manifest, plots and a report."""
    manifests = [
        json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("a", "b")
    ]
    assert manifests[0]["data_fingerprints"] == manifests[1]["data_fingerprints"]
    assert all(len(h["test"]) == 64 for h in manifests[0]["data_fingerprints"].values())
    plots = {p.name for p in (tmp_path / "a" / "plots").glob("*.png")}
    expected = {"accuracy_matrix.png", "forgetting.png"}
    if method == "disco":
        expected |= {"ssa_activation.png", "token_similarity.png"}
    assert plots == expected
    text = (tmp_path / "a" / "report.md").read_text()
    assert all(f"plots/{name}" in text for name in expected)
    assert (tmp_path / "a" / "report.html").stat().st_size > 10_000


def test_zeroshot_rows_are_constant(tmp_path):
    metrics = _run(tmp_path, "z", method="zeroshot")
    assert metrics["accuracy_matrix"][0] == metrics["accuracy_matrix"][1]
    assert metrics["bwt"] == 0.0
