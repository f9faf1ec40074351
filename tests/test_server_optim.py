"""Server optimizers: Flower's own FedOpt classes, driven per group of arrays."""

import numpy as np
import pytest
from fake_grid import FakeGrid
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam
from project_rules import ProjectRule

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.protocol import STAGE
from fcit_flower.strategies.continual import ContinualFedAvg, Federation
from fcit_flower.strategies.server_optim import (
    OptimizerBank,
    ServerOptimizer,
    ServerOptimizerSpec,
    optimizer_class,
)
from fcit_flower.strategies.uploads import RoundPolicy

RNG = np.random.default_rng(0)
START = {
    "w": RNG.normal(size=(3, 4)).astype(np.float32),
    "b": RNG.normal(size=5).astype(np.float32),
}
AVERAGES = [
    {
        k: (v + RNG.normal(scale=0.1, size=v.shape)).astype(np.float32)
        for k, v in START.items()
    }
    for _ in range(4)
]
HYPER = {"lr": 0.1, "momentum": 0.9, "beta1": 0.9, "beta2": 0.99, "eps": 1e-3}


def _trajectory(step, stages):
    current, out = dict(START), []
    for averaged, stage in zip(AVERAGES, stages, strict=True):
        current = step(current, averaged, stage)
        out.append(current)
    return out


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedadagrad", "fedyogi"])
def test_flower_classes_kept_across_stages_equal_the_old_project_rules(name):
    ours = ServerOptimizer(ServerOptimizerSpec(name, per_stage="keep", **HYPER))
    rule = ProjectRule(name, **HYPER)
    stages = [0, 0, 1, 1]
    got = _trajectory(lambda c, a, s: ours.step(c, a, stage=s), stages)
    want = _trajectory(lambda c, a, s: rule.step(c, a), stages)
    for mine, theirs in zip(got, want, strict=True):
        for key in START:
            assert mine[key].dtype == np.float32
            np.testing.assert_array_equal(mine[key], theirs[key])


def test_reset_starts_every_stage_as_a_fresh_optimizer():
    spec = ServerOptimizerSpec("fedadam", per_stage="reset", **HYPER)
    ours = ServerOptimizer(spec)
    got = _trajectory(lambda c, a, s: ours.step(c, a, stage=s), [0, 0, 1, 1])
    fresh = ServerOptimizer(spec)
    second = fresh.step(got[1], AVERAGES[2], stage=7)
    np.testing.assert_array_equal(got[2]["w"], second["w"])
    kept = ServerOptimizer(ServerOptimizerSpec("fedadam", per_stage="keep", **HYPER))
    continued = _trajectory(lambda c, a, s: kept.step(c, a, stage=s), [0, 0, 1, 1])
    np.testing.assert_array_equal(continued[1]["w"], got[1]["w"])
    assert not np.array_equal(continued[2]["w"], got[2]["w"])


def test_fedavg_takes_the_average_and_keeps_dtypes():
    out = ServerOptimizer(ServerOptimizerSpec()).step(START, AVERAGES[0], stage=0)
    np.testing.assert_array_equal(out["w"], AVERAGES[0]["w"])
    assert out["w"] is not AVERAGES[0]["w"]


def test_bank_keeps_one_state_per_group():
    bank = OptimizerBank(ServerOptimizerSpec("fedyogi", **HYPER))
    bank.step("slot0", START, AVERAGES[0], stage=0)
    bank.step("slot0", START, AVERAGES[1], stage=0)
    fresh = ServerOptimizer(ServerOptimizerSpec("fedyogi", **HYPER))
    np.testing.assert_array_equal(
        bank.step("slot1", START, AVERAGES[2], stage=0)["w"],
        fresh.step(START, AVERAGES[2], stage=0)["w"],
    )
    assert bank.optimizers["slot0"].steps == 2


@pytest.mark.parametrize(
    "name",
    ["FedYogi", "flwr.serverapp.strategy.FedAdagrad", "project_rules.ProjectYogi"],
)
def test_class_names_and_import_paths(name):
    assert optimizer_class(name) is not None
    RunConfig.from_mapping({"server-optimizer": name})


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("FedProx", "subclass of Flower's FedOpt"),  # a Flower strategy, no optimizer
        ("no_such_module.Opt", "No module named"),
        ("project_rules.ProjectRule", "subclass of Flower's FedOpt"),
    ],
)
def test_bad_optimizers_are_named(name, fragment):
    with pytest.raises(ConfigError, match=fragment):
        optimizer_class(name)


def test_reset_equals_a_fresh_flower_strategy_per_stage():
    """ContinualFedAvg + FedAdam (reset) over two stages = Flower's own FedAdam,
    a new instance started for each stage, on the same grid."""
    nodes = {10 + c: c for c in range(3)}

    def handler(node, message):
        sent = {k: v.numpy() for k, v in message.content["arrays"].items()}
        shift = 0.1 * (nodes[node] + 1) * int(message.content["config"]["server-round"])
        content = RecordDict(
            {
                "arrays": ArrayRecord(
                    {k: Array(v + np.float32(shift)) for k, v in sent.items()}
                ),
                "metrics": MetricRecord({"num-examples": 5 + nodes[node]}),
            }
        )
        return Message(content=content, reply_to=message)

    grid = FakeGrid(list(nodes), handler)
    policy = RoundPolicy(clients_per_round=3, seed=0, max_update_norm=0.0)
    spec = ServerOptimizerSpec("fedadam", lr=0.05, per_stage="reset")
    ours = ContinualFedAvg(federation=Federation(nodes, policy, spec))
    mine = theirs = ArrayRecord({k: Array(v) for k, v in START.items()})
    for stage in (0, 1):
        config = ConfigRecord({STAGE: stage})
        mine = ours.start(grid, mine, num_rounds=2, train_config=config).arrays
        flower = FedAdam(
            eta=0.05, beta_1=0.9, beta_2=0.99, tau=1e-3, fraction_evaluate=0.0
        )
        flower.min_available_nodes = flower.min_train_nodes = 3
        theirs = flower.start(grid, theirs, num_rounds=2, train_config=config).arrays
        for key in START:
            np.testing.assert_allclose(
                mine[key].numpy(), theirs[key].numpy(), rtol=1e-6, atol=1e-7
            )
