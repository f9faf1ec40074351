"""Checkpoint files: atomic round trip, bounded disk use, damaged-file fallback."""

import numpy as np
import pytest

from fcit_flower.checkpoint import (
    CheckpointError,
    CheckpointStore,
    config_differences,
    load_checkpoint,
)


def _save(store, value, stage, server_round, end=False):
    arrays = {"w": np.full((3, 2), value, np.float32), "t": np.arange(4.0)}
    return store.save(
        arrays, {"value": value}, stage=stage, server_round=server_round, end=end
    )


def test_round_trip_keeps_arrays_dtypes_and_metadata(tmp_path):
    store = CheckpointStore(tmp_path)
    path = _save(store, 1.5, 0, 1)
    loaded = load_checkpoint(path)
    assert loaded.meta == {"value": 1.5}
    assert loaded.arrays["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded.arrays["w"], np.full((3, 2), 1.5))
    assert not list(tmp_path.glob(".*")), "temporary file left behind"


def test_keeps_last_k_round_checkpoints_and_every_stage_end(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for stage in range(3):
        for server_round in (1, 2):
            _save(store, stage * 10 + server_round, stage, server_round)
        _save(store, stage * 10 + 9, stage, 2, end=True)
    names = [p.name for p in store.files()]
    assert sum(n.endswith("-end.npz") for n in names) == 3
    rounds = [n for n in names if not n.endswith("-end.npz")]
    assert rounds == ["ckpt-00006-s2-r1.npz", "ckpt-00007-s2-r2.npz"]
    assert store.latest().meta == {"value": 29}


def test_truncated_latest_falls_back_to_previous_with_warning(tmp_path):
    store = CheckpointStore(tmp_path)
    _save(store, 1.0, 0, 1)
    newest = _save(store, 2.0, 0, 2)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    warnings = []
    checkpoint = store.latest(warn=warnings.append)
    assert checkpoint.meta == {"value": 1.0}
    assert len(warnings) == 1 and newest.name in warnings[0]
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(newest)


def test_no_checkpoint_and_all_damaged_give_none(tmp_path):
    store = CheckpointStore(tmp_path / "none")
    assert store.latest() is None
    store = CheckpointStore(tmp_path)
    (tmp_path / "ckpt-00000-s0-r1.npz").write_bytes(b"not a zip")
    assert store.latest(warn=lambda m: None) is None


def test_reserved_key_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        CheckpointStore(tmp_path).save(
            {"__meta__": np.zeros(1)}, {}, stage=0, server_round=1, end=False
        )


def test_config_differences_ignore_resume_only_keys():
    saved = {"lr": 0.1, "seed": 0, "resume": False, "round-timeout": 10.0}
    current = {"lr": 0.2, "seed": 0, "resume": True, "round-timeout": 99.0}
    assert config_differences(saved, current) == ["lr"]
    assert config_differences(saved, {**saved, "new-key": 1}) == ["new-key"]


def test_checkpoints_store_absolute_data_paths(tmp_path, monkeypatch):
    from fcit_flower.config import RunConfig
    from fcit_flower.run_state import RunState
    from fcit_flower.strategies.continual import StrategyState

    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    config = RunConfig.from_mapping(
        {"data-root": "data", "results-dir": "results", "run-name": "r"}
    )
    RunState(config, 0.0).save(StrategyState({"w": np.ones(2)}, {}), end=True)
    saved = CheckpointStore(tmp_path / "results/r/checkpoints").latest().meta["config"]
    assert saved["data-root"] == str((tmp_path / "data").resolve())
    # the same run-config with the relative path still matches it here ...
    assert config_differences(saved, config.to_mapping()) == []
    # ... and from another directory the saved absolute path is what resumes
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert RunConfig.from_mapping(saved).data_root == str(tmp_path / "data")
    assert config_differences(saved, config.to_mapping()) == ["data-root"]


def test_fault_injection_may_be_switched_off_on_resume():
    saved = {"fault-rate": 0.3, "max-round-retries": 2, "lr": 0.1}
    current = {"fault-rate": 0.0, "max-round-retries": 6, "lr": 0.1}
    assert config_differences(saved, current) == []
    assert config_differences(saved, {**current, "lr": 0.2}) == ["lr"]
