"""A killed run resumed from its checkpoints ends exactly like an uninterrupted one."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fcit_flower import faults
from fcit_flower.checkpoint import CheckpointStore
from fcit_flower.config import ConfigError
from fcit_flower.inprocess import run_inprocess

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "method": "disco",
    "server-optimizer": "fedadam",  # stateful: its moments must survive the crash
    "server-lr": 0.01,
    "num-clients": 4,
    "clients-per-round": 2,
    "rounds-per-stage": 2,
    "num-stages": 3,
    "train-size": 24,
    "test-size": 5,
    # batches of 2: ~3 local steps per client, so clients really train (with one
    # step, its warm-up learning rate is 0 and nothing would change)
    "batch-size": 2,
}


def _command(config):
    return [sys.executable, "-m", "fcit_flower.inprocess", json.dumps(config)]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _final_arrays(run_dir):
    return CheckpointStore(run_dir / "checkpoints").latest().arrays


def _kill_after(config, pattern, timeout=300.0):
    """Start a run, SIGKILL it once a checkpoint matching ``pattern`` exists."""
    process = subprocess.Popen(
        _command(config),
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    directory = Path(config["results-dir"]) / config["run-name"] / "checkpoints"
    deadline = time.monotonic() + timeout
    try:
        while not list(directory.glob(pattern)):
            assert process.poll() is None, "run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait()
    return process.returncode


def test_killed_run_resumes_to_identical_matrix_and_tensors(tmp_path):
    base = {**TINY, "results-dir": str(tmp_path)}
    subprocess.run(
        _command({**base, "run-name": "whole"}), env=_env(), cwd=ROOT, check=True
    )
    crashed = {**base, "run-name": "crashed"}
    # killed in the middle of stage 2 (stage index 1, one round done)
    assert _kill_after(crashed, "ckpt-*-s1-r1.npz") == -9
    run_dir = tmp_path / "crashed"
    assert json.loads((run_dir / "metrics.json").read_text())["complete"] is False
    # and the newest checkpoint damaged too: resume must fall back past it
    newest = CheckpointStore(run_dir / "checkpoints").files()[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    subprocess.run(
        _command({**crashed, "resume": True}), env=_env(), cwd=ROOT, check=True
    )
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["complete"] is True and resumed["resumed_from"]
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["examples"] == whole["examples"]
    a, b = _final_arrays(tmp_path / "whole"), _final_arrays(run_dir)
    assert a.keys() == b.keys() and any(k.startswith("global/slot") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    routing = json.loads((run_dir / "routing.json").read_text())
    assert routing == json.loads((tmp_path / "whole" / "routing.json").read_text())


def test_resume_with_another_config_is_refused_naming_the_keys(tmp_path):
    config = {
        **TINY,
        "method": "finetune",
        "num-stages": 1,
        "rounds-per-stage": 1,
        "results-dir": str(tmp_path),
        "run-name": "r",
    }
    run_inprocess(config)
    with pytest.raises(ConfigError, match=r"differs \(lr: 0\.003 -> 0\.01.*seed"):
        run_inprocess({**config, "resume": True, "lr": 0.01, "seed": 3})
    # a finished run resumed with its own config has nothing left to do
    before = (tmp_path / "r" / "metrics.json").read_text()
    run_inprocess({**config, "resume": True})
    assert (tmp_path / "r" / "metrics.json").read_text() == before


@pytest.mark.parametrize(
    ("kind", "reason"), [("error", "injected fault"), ("nan", "non-finite")]
)
def test_faulty_clients_in_process_are_all_caught(tmp_path, kind, reason):
    config = {
        **TINY,
        "method": "finetune",
        "num-stages": 2,
        "fault-rate": 0.3,
        "fault-kind": kind,
        "results-dir": str(tmp_path),
        "run-name": "drop",
    }
    faults.INJECTED.clear()
    run_inprocess(config)
    metrics = json.loads((tmp_path / "drop" / "metrics.json").read_text())
    assert metrics["complete"] is True
    caught = metrics["rejected_uploads"]
    assert len(caught) == len(faults.INJECTED) > 0
    assert all(reason in r["reason"] for r in caught)
    counted = "client_failures" if kind == "error" else "invalid_uploads"
    assert metrics[counted] == len(caught)


@pytest.mark.parametrize(
    "overrides",
    [
        {"method": "ewc"},
        {"method": "olora"},
        {"method": "moelora"},
        # 16-bit messages, float32 server state: the resumed run re-sends the same
        # bits, so it ends bit-exact too (DISCO with FedAdam's moments)
        {"method": "disco", "transport-dtype": "bfloat16"},
        {"method": "disco", "transport-dtype": "float16"},
    ],
    ids=["ewc", "olora", "moelora", "disco-bfloat16", "disco-float16"],
)
def test_baselines_resume_mid_stage_to_identical_tensors(tmp_path, overrides):
    # EWC's anchor and Fisher and O-LoRA's per-block optimizer state live in the
    # checkpoint too: drop what came after stage 2 round 1 and resume from there.
    method = overrides["method"]
    config = {
        **TINY,
        **overrides,
        "num-stages": 2,
        "results-dir": str(tmp_path),
        "run-name": method,
    }
    run_inprocess(config)
    run_dir = tmp_path / method
    store = CheckpointStore(run_dir / "checkpoints")
    final = store.latest().arrays
    whole = json.loads((run_dir / "metrics.json").read_text())
    for path in store.files():
        if path.name.endswith(("-s1-r2.npz", "-s1-r2-end.npz")):
            path.unlink()
    run_inprocess({**config, "resume": True})
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["resumed_from"][0].endswith("-s1-r1.npz")
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    again = store.latest().arrays
    assert final.keys() == again.keys()
    for key in final:
        np.testing.assert_array_equal(final[key], again[key], err_msg=key)
    if method == "ewc":
        assert any(k.startswith("ewc/") for k in final)
    # float32 state: no 16-bit wire array in a checkpoint
    assert all(v.dtype not in (np.uint16, np.float16) for v in final.values())
