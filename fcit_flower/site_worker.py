"""A site's long-lived worker: the ClientApp's work in one process for many messages.

Flower starts a fresh ClientApp process for every message (Flower 1.41-1.42;
flwrlabs/flower#3670 asks for non-ephemeral ClientApps), and that process pays for
importing torch and loading the base each time: seconds for the tiny base, a
multi-GB read and a quantization for LLaVA-7B. A site can instead start one
worker, which imports once and keeps the base (and the run's data) loaded::

    python -m fcit_flower.site_worker --socket /run/fcit/site.sock

and give its SuperNode ``--node-config '... site-worker="/run/fcit/site.sock"'``.
The ClientApp then only forwards each message's content, with the run and node
configs, and returns the worker's reply; the handlers are the same
(:mod:`fcit_flower.client_handlers`), so a run's numbers do not change.

One request per connection: an 8-byte length and a pickle of ``(kind, content,
run config, node config, run id)``; the reply is a length and a pickle of
``("ok", content)`` or ``(error type, message)``. Pickle is safe only between
processes of one user: the socket is created with mode 0600, and each side checks
the other's user id (``SO_PEERCRED``, Linux) before reading anything, so neither
another user's worker nor another user's client is ever unpickled. Messages are
handled one at a time, as a SuperNode sends them; a new run id makes the worker
drop what the previous run loaded (bases, data), so a run never trains on files
that changed since discovery fingerprinted them.

This module imports no torch: the ClientApp imports it on every message.
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flwr.app import RecordDict

WORKER_KEY = "site-worker"
"""Node-config key: the Unix socket of the site's worker."""

_LENGTH = struct.Struct(">Q")
_CREDENTIALS = struct.Struct("3i")  # pid, uid, gid
# A request must arrive within this after connecting (a stuck client cannot hold
# the worker); the handler itself has no limit (Flower's round timeout has).
REQUEST_TIMEOUT_S = 60.0


def _check_peer(conn: socket.socket) -> None:
    """Refuse a peer that is not this process's user (before any unpickling)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        raise OSError("the site worker needs Linux (SO_PEERCRED)")
    raw = conn.getsockopt(socket.SOL_SOCKET, option, _CREDENTIALS.size)
    uid = _CREDENTIALS.unpack(raw)[1]
    if uid != os.getuid():
        raise PermissionError(f"peer is user {uid}, not {os.getuid()}")


def _send(conn: socket.socket, payload: Any) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    conn.sendall(_LENGTH.pack(len(data)) + data)


def _receive(conn: socket.socket) -> Any:
    header = _exactly(conn, _LENGTH.size)
    return pickle.loads(_exactly(conn, _LENGTH.unpack(header)[0]))


def _exactly(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def ask_worker(
    path: str,
    kind: str,
    content: RecordDict,
    run_config: Mapping[str, Any],
    node_config: Mapping[str, Any],
    run_id: int = 0,
) -> RecordDict:
    """Have the worker at ``path`` handle one message; its reply content.

    Raises
    ------
    ValueError
        The worker is not reachable (one line naming the socket and the key), or
        the handler failed with a ValueError (its message, as if run here).
    RuntimeError
        The handler failed with another error (its type and message).
    """
    request = (kind, content, dict(run_config), dict(node_config), run_id)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(REQUEST_TIMEOUT_S)
            conn.connect(path)
            _check_peer(conn)
            _send(conn, request)
            conn.settimeout(None)  # training takes what it takes
            status, payload = _receive(conn)
    except OSError as error:
        raise ValueError(
            f"site worker {path!r} (node-config {WORKER_KEY}) not reachable: {error}"
        ) from None
    if status == "ok":
        return payload  # type: ignore[no-any-return]
    if status == "ValueError":
        raise ValueError(payload)
    raise RuntimeError(f"{status}: {payload}")


def listen(path: Path) -> socket.socket:
    """A Unix socket at ``path`` only this user can use (a stale one is replaced).

    Raises
    ------
    OSError
        Another worker already listens there.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody answers: a stale socket file
    else:
        probe.close()
        raise OSError(f"a worker already listens on {path}")
    finally:
        probe.close()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # created 0600: no window with wider permissions
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    server.listen(4)
    return server


def serve(server: socket.socket, *, requests: int | None = None) -> None:
    """Answer requests on ``server`` one at a time.

    ``requests``: stop after that many (tests); default: until the process stops.
    """
    from flwr.app import Context, RecordDict

    from fcit_flower.client_handlers import HANDLERS, forget_loaded

    served, current_run = 0, None
    while requests is None or served < requests:
        conn, _ = server.accept()
        with conn:
            try:
                conn.settimeout(REQUEST_TIMEOUT_S)
                _check_peer(conn)
                kind, content, run_config, node_config, run_id = _receive(conn)
                conn.settimeout(None)
            except Exception as error:  # not our user, gone, garbage: next one
                print(f"site worker: request refused: {error}", flush=True)
                continue
            if run_id != current_run:  # a new run reads base and data anew
                forget_loaded()
                current_run = run_id
            context = Context(
                run_id=run_id,
                node_id=0,
                node_config=node_config,
                state=RecordDict(),
                run_config=run_config,
            )
            started = time.perf_counter()
            try:
                reply: tuple[str, Any] = ("ok", HANDLERS[kind](content, context))
            except Exception as error:  # the ClientApp re-raises it
                name = "ValueError" if isinstance(error, ValueError) else None
                reply = (name or type(error).__name__, str(error))
            seconds = time.perf_counter() - started
            print(f"site worker: {kind} {reply[0]} {seconds:.2f} s", flush=True)
            try:
                _send(conn, reply)
            except Exception as error:  # the ClientApp is gone, or an odd reply
                print(f"site worker: reply not sent: {error}", flush=True)
        served += 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fcit_flower.site_worker --socket PATH``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, type=Path, help="socket path")
    args = parser.parse_args(argv)
    try:
        server = listen(args.socket)
    except OSError as error:
        print(f"site worker: {error}")
        return 2
    print(f"site worker: listening on {args.socket}", flush=True)
    try:
        serve(server)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        args.socket.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
