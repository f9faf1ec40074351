"""A failed round says truthfully whether a checkpoint exists, and keeps its reasons."""

import json

import numpy as np
import pytest

from fcit_flower.config import RunConfig
from fcit_flower.run_state import RunState
from fcit_flower.server_app import _train_stage
from fcit_flower.strategies.continual import StrategyState
from fcit_flower.strategies.uploads import RoundFailedError


class _FailingStrategy:
    """Stands in for a strategy whose round gets too few valid uploads."""

    rejected = [{"client": 3, "kind": "invalid", "reason": "norm 1e9 > 10 x global"}]

    def start(self, grid, **kwargs):
        raise RoundFailedError("stage 1 round 2: 0 valid uploads after 2 retries")


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_failed_round_tells_whether_it_can_be_resumed(tmp_path, with_checkpoint):
    config = RunConfig.from_mapping({"results-dir": str(tmp_path), "run-name": "r"})
    run = RunState(config, 0.0)
    if with_checkpoint:
        run.save(StrategyState({"w": np.ones(2)}, {}), end=False)
    with pytest.raises(RoundFailedError) as error:
        _train_stage(_FailingStrategy(), None, {}, config, run)
    message = str(error.value)
    assert message.startswith("stage 1 round 2: 0 valid uploads after 2 retries")
    assert "\n" not in message
    if with_checkpoint:
        assert "resume from ckpt-00000-s0-r0.npz with: fcit-flower resume" in message
        assert "no checkpoint" not in message
    else:
        assert "no checkpoint was written yet, so the run must be started again" in (
            message
        )
        assert "fcit-flower resume" not in message
    kept = json.loads((config.run_dir / "rejected_uploads.json").read_text())
    assert kept["rejected_uploads"] == _FailingStrategy.rejected
    assert kept["error"].startswith("stage 1 round 2")


def test_too_few_supernodes_names_the_federation_setting():
    from fcit_flower.server_app import discover_clients

    class OneNodeGrid:
        def get_node_ids(self):
            return [11]

    with pytest.raises(RuntimeError) as error:
        discover_clients(OneNodeGrid(), 4, timeout=0.0)
    assert str(error.value).startswith("only 1 of num-clients=4 clients connected")
    assert '--federation-config "num-supernodes=4"' in str(error.value)


def test_node_discovery_gives_up_when_no_node_joins_but_waits_while_they_do(
    monkeypatch,
):
    import fcit_flower.server_app as server_app

    clock = {"now": 0.0}
    monkeypatch.setattr(server_app.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(
        server_app.time, "sleep", lambda s: clock.__setitem__("now", clock["now"] + s)
    )

    class StuckGrid:  # two of four nodes, and no more ever join
        def get_node_ids(self):
            return [1, 2]

    with pytest.raises(RuntimeError, match="only 2 of num-clients=4"):
        server_app.discover_clients(StuckGrid(), 4, timeout=300.0, settle=30.0)
    assert clock["now"] == pytest.approx(30.0)  # the settle time, not the timeout

    class TricklingGrid:  # a node joins every 20 s: each join restarts the wait
        def get_node_ids(self):
            return list(range(1 + int(clock["now"] // 20)))

        def send_and_receive(self, messages, *, timeout=None):
            return []

    clock["now"] = 0.0
    server_app.discover_clients(TricklingGrid(), 4, timeout=300.0, settle=30.0)
    assert clock["now"] == pytest.approx(60.0)  # waited past 30 s for the 4th node


def test_compare_resume_refuses_a_checkpoint_of_another_config_before_launch(
    tmp_path,
):
    import numpy as np

    from fcit_flower.checkpoint import CheckpointStore
    from fcit_flower.config import ConfigError, RunConfig
    from fcit_flower.launch.recovery import check_resumable

    saved = RunConfig(results_dir=str(tmp_path), lr=1e-3)
    CheckpointStore(saved.run_dir / "checkpoints").save(
        {"w": np.ones(2)},
        {"config": saved.to_mapping()},
        stage=0,
        server_round=1,
        end=False,
    )
    check_resumable(saved.replace(resume=True, max_round_retries=5))  # operational
    with pytest.raises(ConfigError, match=r"lr: 0.001 -> 0.003"):
        check_resumable(saved.replace(lr=3e-3))
    check_resumable(RunConfig(results_dir=str(tmp_path / "none")))  # no checkpoint
