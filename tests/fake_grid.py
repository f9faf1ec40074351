"""An in-process Grid: routes messages to Python handlers (strategy unit tests).

A handler that returns ``None`` models a node that never replies. Sent messages get
ids, as Flower's grids give them, so replies can refer to them.
"""

from collections.abc import Callable, Iterable
from uuid import uuid4

from flwr.app import Message
from flwr.serverapp import Grid


class FakeGrid(Grid):
    """Grid whose nodes are ``handler(node_id, message) -> reply Message``."""

    def __init__(self, node_ids: list[int], handler: Callable[[int, Message], Message]):
        self.node_ids = node_ids
        self.handler = handler
        self.sent: list[Message] = []

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout=None):
        replies = []
        for message in messages:
            if not message.metadata.message_id:  # as Flower's grids do on sending
                message.metadata.__dict__["_message_id"] = str(uuid4())
            self.sent.append(message)
            reply = self.handler(message.metadata.dst_node_id, message)
            if reply is not None:
                replies.append(reply)
        return replies

    def create_message(self, *args, **kwargs):  # pragma: no cover - unused
        raise NotImplementedError

    def pull_messages(self, *args, **kwargs):  # pragma: no cover - unused
        raise NotImplementedError

    def push_messages(self, *args, **kwargs):  # pragma: no cover - unused
        raise NotImplementedError

    @property
    def run(self):  # pragma: no cover - unused
        raise NotImplementedError

    def set_run(self, run_id):  # pragma: no cover - unused
        raise NotImplementedError
