"""An in-process Grid: the ClientApp called directly, without Flower's runtime.

For debugging, tests of the app logic, and the Flower-overhead benchmark (the same
local training as a plain Python loop). Messages still go through the real
``ClientApp`` object, so the handlers, records and replies are the real ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

# Flower's code for an exception raised inside a ClientApp.
CLIENT_APP_RAISED_EXCEPTION = 300


class InProcessGrid(Grid):
    """A Grid whose nodes are in-process calls of ``client_app``.

    Parameters
    ----------
    client_app : ClientApp
        The app to call.
    num_nodes : int
        Nodes ``1..num_nodes`` with ``partition-id`` ``0..num_nodes-1``.
    run_config : dict
        The run-config every node sees.
    node_configs : sequence of dict, optional
        Node ``k``'s own node config instead (a deployment's sites).
    run_id : int
        The run id of every node's context.
    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: dict[str, Any],
        node_configs: Sequence[Mapping[str, Any]] | None = None,
        run_id: int = 1,
    ):
        self.client_app = client_app
        if node_configs is None:
            node_configs = [
                {"partition-id": k, "num-partitions": num_nodes}
                for k in range(num_nodes)
            ]
        self.contexts = {
            node: Context(
                run_id=run_id,
                node_id=node,
                node_config=dict(node_configs[node - 1]),
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for node in range(1, num_nodes + 1)
        }
        self.messages_sent = 0

    def get_node_ids(self) -> Iterable[int]:
        """All node ids."""
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Call the ClientApp for each message, in order.

        An exception in the ClientApp becomes an error reply, as Flower does it.
        """
        replies = []
        for message in messages:
            self.messages_sent += 1
            node = message.metadata.dst_node_id
            try:
                replies.append(self.client_app(message, self.contexts[node]))
            except Exception as error:  # what Flower's runtime does too
                reason = f"{type(error).__name__}: {error}"
                replies.append(
                    Message(
                        error=Error(CLIENT_APP_RAISED_EXCEPTION, reason),
                        reply_to=message,
                    )
                )
        return replies

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        """Not used by fcit-flower."""
        raise NotImplementedError

    def push_messages(self, *args: Any, **kwargs: Any) -> Iterable[str]:
        """Not used by fcit-flower."""
        raise NotImplementedError

    def pull_messages(self, *args: Any, **kwargs: Any) -> Iterable[Message]:
        """Not used by fcit-flower."""
        raise NotImplementedError

    @property
    def run(self) -> Any:
        """Not used by fcit-flower."""
        raise NotImplementedError

    def set_run(self, run: Any) -> None:
        """Not used by fcit-flower."""
        raise NotImplementedError


def small_run_config(
    *,
    clients: int,
    per_round: int,
    train_size: int,
    test_size: int,
    num_stages: int = 2,
    min_client_size: int | None = None,
) -> dict[str, int]:
    """The run-config keys that size a small run (tests, benchmarks), 2 rounds a stage.

    Parameters
    ----------
    clients, per_round : int
        ``num-clients`` and ``clients-per-round``.
    train_size, test_size : int
        Mini-FCIT samples per task.
    num_stages : int
        Stages to run.
    min_client_size : int, optional
        ``min-client-size``; the default when not given.

    Returns
    -------
    dict
        Kebab-case run-config keys.
    """
    config = {
        "num-clients": clients,
        "clients-per-round": per_round,
        "rounds-per-stage": 2,
        "num-stages": num_stages,
        "train-size": train_size,
        "test-size": test_size,
    }
    if min_client_size is not None:
        config["min-client-size"] = min_client_size
    return config


def run_inprocess(
    run_config: Mapping[str, Any],
    node_configs: Sequence[Mapping[str, Any]] | None = None,
    run_id: int = 1,
) -> None:
    """Run the ServerApp's main on an :class:`InProcessGrid` of the config's size.

    ``node_configs``: one per node, as a deployment's SuperNodes set them (default:
    simulation's ``partition-id`` / ``num-partitions``); ``run_id``: the run id of
    every context (a site worker tells runs apart by it).
    """
    # Imported here: the apps import torch and transformers.
    from fcit_flower.client_app import app as client_app
    from fcit_flower.config import RunConfig
    from fcit_flower.server_app import main

    config = RunConfig.from_mapping(run_config)
    # What Flower sets in a ServerApp process; Messages read it.
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, 0
    grid = InProcessGrid(
        client_app, config.num_clients, dict(run_config), node_configs, run_id
    )
    context = Context(
        run_id=run_id,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config),
    )
    main(grid, context)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Run fcit-flower without Flower's runtime (debugging, tests)."
    )
    parser.add_argument("run_config", help="run-config as a JSON object")
    run_inprocess(json.loads(parser.parse_args(sys.argv[1:]).run_config))
