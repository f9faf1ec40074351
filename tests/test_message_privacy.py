"""What leaves a client: no task name and no label in any record of any message.

The real ServerApp and ClientApp exchange their messages through the in-process
grid (the records a deployment carries); every record name, key and string value,
both ways, is searched for the run's task names.
"""

import json

import pytest
from flwr.app import Context, Message, RecordDict

from fcit_flower.client_app import app as client_app
from fcit_flower.config import RunConfig
from fcit_flower.inprocess import InProcessGrid, small_run_config
from fcit_flower.server_app import main
from fcit_flower.tasks.data import config_load_task, data_root

CONFIG = small_run_config(clients=3, per_round=2, train_size=12, test_size=3)


class RecordingGrid(InProcessGrid):
    """The in-process grid, keeping every message sent and every reply."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.messages += [*messages, *replies]
        return replies


def _strings(message: Message) -> list[str]:
    """Every record name, key and string value of a message."""
    out = []
    for name, record in message.content.items():
        out.append(name)
        for key, value in record.items():
            out.append(key)
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, list):
                out += [v for v in value if isinstance(v, str)]
    return out


@pytest.mark.parametrize("method", ["disco", "finetune"])
def test_no_task_name_travels_and_routing_still_names_tasks(tmp_path, method):
    config = {**CONFIG, "method": method, "results-dir": str(tmp_path)}
    config["run-name"] = method
    grid = RecordingGrid(client_app, config["num-clients"], config)
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config
    )
    main(grid, context)
    metrics = json.loads((tmp_path / method / "metrics.json").read_text())
    tasks = metrics["tasks"]
    assert grid.messages
    # Labels: every training answer of the run, compared whole (short answers
    # such as "1" or "no" would match inside unrelated strings)
    run_config = RunConfig.from_mapping(config)
    root = data_root(run_config)
    answers = {
        sample.answer
        for task in tasks
        for sample in config_load_task(run_config, root, task, "train")
    }
    assert len(answers) > 10
    for message in grid.messages:
        strings = _strings(message)
        leaked = [s for s in strings for t in tasks if t in s]
        leaked += [s for s in strings if s in answers]
        assert not leaked, (message.metadata.message_type, leaked)
    if method == "disco":  # the server names clients' tasks from its schedule
        routing = json.loads((tmp_path / method / "routing.json").read_text())
        named = {e["tasks"] for e in routing["assignments"]}
        assert named and all(
            all(t in tasks for t in entry.split("+")) for entry in named
        )
