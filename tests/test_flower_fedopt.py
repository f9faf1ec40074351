"""Flower's own FedYogi, applied per DISCO subspace, equals the project's old rule."""

import numpy as np

from fcit_flower.checkpoint import CheckpointStore
from fcit_flower.inprocess import run_inprocess

ONE_STAGE = {
    "method": "disco",
    "server-lr": 0.01,
    "num-clients": 4,
    "clients-per-round": 2,
    "rounds-per-stage": 2,
    "num-stages": 1,
    "train-size": 24,
    "test-size": 5,
    # ~6 samples per client: batches of 2 give 3 local steps (the first one is the
    # warm-up step at lr 0), so the subspaces really move
    "batch-size": 2,
}


def _global_arrays(tmp_path, name, optimizer):
    config = {
        **ONE_STAGE,
        "server-optimizer": optimizer,
        "results-dir": str(tmp_path),
        "run-name": name,
    }
    run_inprocess(config)
    arrays = CheckpointStore(tmp_path / name / "checkpoints").latest().arrays
    # the optimizer really stepped: per-subspace moments, not a plain average
    v_t = [v for k, v in arrays.items() if k.startswith("optimizer/slot0/v_t/")]
    assert v_t and all(np.any(v != 0) for v in v_t)
    return {k: v for k, v in arrays.items() if k.startswith("global/")}


def test_flower_fedyogi_disco_run_equals_the_project_rule(tmp_path):
    flower = _global_arrays(tmp_path, "flower", "FedYogi")
    project = _global_arrays(tmp_path, "project", "project_rules.ProjectYogi")
    assert flower.keys() == project.keys()
    assert any(k.startswith("global/slot0/") for k in flower)
    for key in flower:
        np.testing.assert_array_equal(flower[key], project[key], err_msg=key)
