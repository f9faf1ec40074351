"""The process kit of a launch: ports, environments, logs, health, stopping.

What simulation (:mod:`fcit_flower.launch.simulation`) and a loopback deployment
(:mod:`fcit_flower.launch.deployment`) share, with :mod:`fcit_flower.launch.runs`.
``flwr run`` in Flower 1.41 talks to a SuperLink named in ``$FLWR_HOME/config.toml``;
a launch makes a private ``FLWR_HOME`` (:func:`flwr_env`) whose ``config.toml``
names one connection to a loopback port picked now (:func:`free_port`,
:func:`write_connection`), starts its SuperLink (and SuperNodes) itself, each in its
own session with a log file (:func:`start_logged`), waits for ``/health``
(:func:`wait_healthy`), and always stops what it started, by process id: the
process tree of each, which includes the detached ``flower-superexec`` /
``flwr-simulation`` / Ray processes, and nothing else (:func:`stop_process_tree`).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import psutil

CONNECTION = "fcit"
"""Name of the SuperLink connection in the private ``config.toml``."""

STARTUP_TIMEOUT_S = 60.0


class FlowerRunError(RuntimeError):
    """The SuperLink could not start or the run could not be submitted."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flwr_env(home: Path) -> dict[str, str]:
    """The environment of every Flower command of a launch with ``FLWR_HOME=home``."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PYTHONUNBUFFERED="1",
    )
    # The SuperLink starts `flower-superexec` and `flwr-simulation` by name: put this
    # interpreter's scripts first, so an unactivated virtualenv works too.
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    if len(str(home)) <= 40:  # Ray's unix socket paths must stay under 108 bytes
        env["RAY_TMPDIR"] = str(home)  # Ray's session files go with the temp dir
    return env


def flwr_bin(name: str) -> str:
    """The Flower executable ``name`` of this interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("" when unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def healthy(port: int, ca: Path | None = None, host: str = "127.0.0.1") -> bool:
    """Whether the SuperLink at ``host:port`` answers ``/health`` (HTTPS: ``ca``)."""
    scheme, context = "http", None
    if ca is not None:
        scheme, context = "https", ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(
            f"{scheme}://{host}:{port}/health", timeout=1.0, context=context
        ) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_logged(
    command: Sequence[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen:
    """Start ``command`` in its own session, its output going to ``log_path``."""
    with open(log_path, "w") as handle:
        return subprocess.Popen(
            list(command),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_healthy(
    process: subprocess.Popen,
    is_healthy: Callable[[], bool],
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> bool:
    """Poll ``is_healthy`` until it holds, ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if is_healthy():
            return True
        time.sleep(0.2)
    return False


def write_connection(
    home: Path, port: int, ca: Path | None = None, host: str = "127.0.0.1"
) -> None:
    """Name the SuperLink at ``host:port`` :data:`CONNECTION` in ``home/config.toml``.

    With ``ca``, the connection uses TLS with that root certificate; otherwise it is
    insecure (loopback simulation).
    """
    security = f'root-certificates = "{ca}"' if ca is not None else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f"[superlink.{CONNECTION}]\n"
        f'address = "{host}:{port}"\n{security}\n'
    )


def stop_process_tree(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop ``process`` (a session leader we started) and everything it spawned.

    The SuperLink starts ``flower-superexec`` in a new session, which starts
    ``flwr-simulation`` and Ray; none of them is in the SuperLink's process group.
    So the descendants and their sessions are recorded first; then the process group
    gets SIGTERM (the SuperLink shuts down its SuperExec); descendants still alive
    after a few seconds get SIGTERM themselves, and after ``grace_s`` more every
    survivor, and every process still in one of those sessions (it may have been
    re-parented), gets SIGKILL.

    Parameters
    ----------
    process : subprocess.Popen
        A process started with ``start_new_session=True``.
    grace_s : float
        Seconds to wait between SIGTERM and SIGKILL.
    """
    try:
        tree = [psutil.Process(process.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    sessions = {process.pid}
    for member in tree:
        try:
            sessions.add(os.getsid(member.pid))
        except OSError:
            pass
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _, alive = psutil.wait_procs(tree, timeout=min(grace_s, 3.0))
    signal_each(alive)
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    uid = os.getuid()
    for candidate in psutil.process_iter(["uids"]):
        try:
            in_session = os.getsid(candidate.pid) in sessions
        except OSError:
            continue
        uids = candidate.info.get("uids")
        if in_session and uids is not None and uids.real == uid:
            alive.append(candidate)
    signal_each(alive, kill=True)
    psutil.wait_procs(alive, timeout=5.0)
    process.wait()


def signal_each(members: Iterable[psutil.Process], *, kill: bool = False) -> None:
    """SIGTERM (or, with ``kill``, SIGKILL) each of ``members`` that still exists."""
    for member in members:
        try:
            if kill:
                member.kill()
            else:
                member.terminate()
        except psutil.NoSuchProcess:
            pass
