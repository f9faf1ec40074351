"""ClientApp: a site's side of the federation (wiring only).

Flower starts a fresh ClientApp process for every message a site receives (Flower
1.41-1.42, any isolation mode), so what this process imports and loads it pays per
message. This module therefore imports only Flower: the work is in
:mod:`fcit_flower.client_handlers` (torch, transformers, the base model), imported
here when the message is handled in this process, or done by the site's
long-lived worker when the node config names one (``site-worker="/path/socket"``,
:mod:`fcit_flower.site_worker`), which keeps torch imported and the base loaded
between messages.
"""

from __future__ import annotations

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fcit_flower.site_worker import WORKER_KEY, ask_worker

app = ClientApp()


def _handle(kind: str, content: RecordDict, context: Context) -> RecordDict:
    """The reply content: from the site's worker, or computed here."""
    socket = context.node_config.get(WORKER_KEY, "")
    if socket:
        return ask_worker(
            str(socket),
            kind,
            content,
            context.run_config,
            context.node_config,
            context.run_id,
        )
    from fcit_flower.client_handlers import HANDLERS

    return HANDLERS[kind](content, context)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Describe this client, or let the method answer (DISCO: identity token)."""
    return Message(content=_handle("query", msg.content, context), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received adapter on this client's data for the stage."""
    return Message(content=_handle("train", msg.content, context), reply_to=msg)
