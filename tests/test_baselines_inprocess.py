"""Every FCIT-paper baseline end to end in one process: 2 stages x 1 round."""

import json

import pytest
from flwr.app import Context, RecordDict

from fcit_flower.client_app import app as client_app
from fcit_flower.inprocess import InProcessGrid
from fcit_flower.protocol import ARRAYS_KEY, CONFIG_KEY
from fcit_flower.server_app import main

TINY = {
    "num-clients": 3,
    "clients-per-round": 2,
    "rounds-per-stage": 1,
    "num-stages": 2,
    "train-size": 18,
    "test-size": 4,
    "moelora-experts": 4,
}


class RecordingGrid(InProcessGrid):
    """Keeps (stage, keys sent, keys received) of every TRAIN exchange."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exchanges = []

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        for message, reply in zip(messages, replies, strict=True):
            if message.metadata.message_type == "train":
                self.exchanges.append(
                    (
                        int(message.content.config_records[CONFIG_KEY]["stage"]),
                        set(message.content.array_records[ARRAYS_KEY]),
                        set(reply.content.array_records[ARRAYS_KEY]),
                    )
                )
        return replies


def _run(tmp_path, method):
    config = {
        **TINY,
        "method": method,
        "results-dir": str(tmp_path),
        "run-name": method,
    }
    grid = RecordingGrid(client_app, config["num-clients"], config)
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config
    )
    main(grid, context)
    metrics = json.loads((tmp_path / method / "metrics.json").read_text())
    assert metrics["complete"] and len(metrics["accuracy_matrix"]) == 2
    assert metrics["rejected_uploads"] == []
    return grid.exchanges


def _prefixes(keys):
    return {k.split("/", 1)[0] for k in keys if "/" in k}


@pytest.mark.parametrize("method", ["ewc", "olora", "mlora", "moelora"])
def test_baseline_runs_two_stages(tmp_path, method):
    exchanges = _run(tmp_path, method)
    assert {stage for stage, _, _ in exchanges} == {0, 1}
    for stage, sent, received in exchanges:
        if method == "ewc":
            # Fisher comes up in each stage's last round; anchor and F go down later.
            assert _prefixes(received) == {"ewc-fisher"}
            assert _prefixes(sent) == ({"ewc-fisher", "ewc-anchor"} if stage else set())
        elif method in ("olora", "mlora"):
            # All blocks so far go down; only the current block comes back.
            assert _prefixes(sent) == {f"block{k}" for k in range(stage + 1)}
            assert _prefixes(received) == {f"block{stage}"}
        else:
            assert sent == received
            assert any(k.endswith(".lora_router") for k in received)
