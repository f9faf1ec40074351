"""Our per-subspace server optimizers against Flower's own strategy classes."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedYogi

from fcit_flower.strategies.server_optim import ServerOptimizer

RNG = np.random.default_rng(0)
START = {"w": RNG.normal(size=(3, 4)).astype(np.float32)}
AVERAGES = [
    {"w": (START["w"] + RNG.normal(scale=0.1, size=(3, 4))).astype(np.float32)}
    for _ in range(3)
]


def _reply(arrays):
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": 1}),
        }
    )
    msg = Message(content=content, dst_node_id=1, message_type="train")
    return Message(content=content, reply_to=msg)


def _flower_trajectory(strategy):
    current = ArrayRecord({k: Array(v) for k, v in START.items()})
    out = []
    for server_round, averaged in enumerate(AVERAGES, start=1):
        if hasattr(strategy, "current_arrays"):
            strategy.current_arrays = (
                {k: v.numpy() for k, v in current.items()}
                if not isinstance(strategy, FedAvgM)
                else current
            )
        new, _ = strategy.aggregate_train(server_round, [_reply(averaged)])
        current = new
        out.append(new["w"].numpy())
    return out


@pytest.mark.parametrize(
    "name, flower",
    [
        ("fedavgm", FedAvgM(server_learning_rate=0.5, server_momentum=0.9)),
        ("fedadam", FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)),
        ("fedadagrad", FedAdagrad(eta=0.1, tau=1e-3)),
        ("fedyogi", FedYogi(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)),
    ],
)
def test_matches_flower(name, flower):
    lr = 0.5 if name == "fedavgm" else 0.1
    ours = ServerOptimizer(
        name=name, lr=lr, momentum=0.9, beta1=0.9, beta2=0.99, eps=1e-3
    )
    current = dict(START)
    expected = _flower_trajectory(flower)
    for averaged, want in zip(AVERAGES, expected, strict=True):
        current = ours.step(current, averaged)
        np.testing.assert_allclose(current["w"], want, rtol=1e-5, atol=1e-6)


def test_fedavg_takes_the_average():
    out = ServerOptimizer("fedavg").step(START, AVERAGES[0])
    np.testing.assert_array_equal(out["w"], AVERAGES[0]["w"])


def test_fedavgm_hand_computed():
    opt = ServerOptimizer("fedavgm", lr=1.0, momentum=0.5)
    x = {"w": np.array([1.0])}
    x = opt.step(x, {"w": np.array([2.0])})  # v = -1 -> x = 2
    assert x["w"] == pytest.approx([2.0])
    x = opt.step(x, {"w": np.array([2.0])})  # v = 0.5 * -1 + 0 -> x = 2.5
    assert x["w"] == pytest.approx([2.5])


@pytest.mark.parametrize(
    "name", ["fedavg", "fedavgm", "fedadam", "fedadagrad", "fedyogi"]
)
def test_dtype_is_kept(name):
    opt = ServerOptimizer(name, lr=0.01)
    current = {"w": np.zeros(3, np.float32)}
    for _ in range(2):
        current = opt.step(current, {"w": current["w"] + np.float32(0.1)})
        assert current["w"].dtype == np.float32
    assert np.all(current["w"] > 0)
