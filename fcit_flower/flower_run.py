"""Run the app through Flower's simulation engine, robustly.

``flwr run`` in Flower 1.41 talks to a SuperLink named in ``$FLWR_HOME/config.toml``;
for the ``local`` connection it starts a detached SuperLink and leaves it running,
and ``flwr run --stream`` exits 0 even when the ServerApp crashes. So this module:

1. makes a private ``FLWR_HOME`` whose ``config.toml`` names one insecure connection
   to a loopback port picked now;
2. starts ``flower-superlink --simulation`` itself (own session, log file) and waits
   for its ``/health`` endpoint;
3. submits with ``flwr run --format json`` (which prints the run id) and the
   simulation settings as ``--federation-config`` (1.41 deprecates the ``options``
   table of a connection in favour of this flag);
4. follows the log with ``flwr log ID --stream``, which ends when the run finishes,
   then reads the final status with ``flwr ls --run-id ID --format json``;
5. always stops what it started: the SuperLink's process tree, which includes the
   detached ``flower-superexec`` / ``flwr-simulation`` / Ray processes, and nothing
   else.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psutil

from fcit_flower.config import require_cuda

ConfigValue = str | int | float | bool

CONNECTION = "fcit"
"""Name of the SuperLink connection in the private ``config.toml``."""

_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_STARTUP_TIMEOUT_S = 60.0
_START_ATTEMPTS = 3


class FlowerRunError(RuntimeError):
    """The SuperLink could not start or the run could not be submitted."""


@dataclass(frozen=True)
class RunOutcome:
    """How a Flower run ended.

    Attributes
    ----------
    run_id : int
        Flower's run id.
    status : str
        Final status exactly as ``flwr ls`` reports it (``finished:completed``,
        ``finished:failed``, ``finished:stopped``), or ``timeout`` / ``unknown``.
    completed : bool
        True only when Flower reports ``finished:completed``.
    log : str
        The run's log (ServerApp and ClientApp output) as ``flwr log`` streamed it.
    details : str
        Flower's ``status-details`` (e.g. the reason for a failure); may be empty.
    """

    run_id: int
    status: str
    completed: bool
    log: str
    details: str = ""


def format_override_value(value: ConfigValue) -> str:
    r"""Render one run-config value as a TOML literal ``flwr run`` accepts.

    Strings become TOML basic strings in which ``"`` and control characters are
    ``\uXXXX`` escapes: Flower's ``--run-config`` splitter (``key="[^"]*"``) cannot
    see an escaped ``\"``.

    Parameters
    ----------
    value : str, int, float or bool
        The value.

    Returns
    -------
    str
        The TOML literal.

    Raises
    ------
    TypeError
        For any other type.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))  # 0.003, 1e-05, inf, nan: all valid TOML floats
    if isinstance(value, str):
        escaped = []
        for char in value:
            if char == "\\":
                escaped.append("\\\\")
            elif char == '"' or ord(char) < 0x20 or ord(char) == 0x7F:
                escaped.append(f"\\u{ord(char):04x}")
            else:
                escaped.append(char)
        return '"' + "".join(escaped) + '"'
    raise TypeError(f"run-config values must be str, int, float or bool, not {value!r}")


def format_overrides(values: Mapping[str, ConfigValue]) -> str:
    """Render run-config overrides in ``flwr run --run-config`` syntax.

    Parameters
    ----------
    values : Mapping
        Run-config keys (kebab-case) and values.

    Returns
    -------
    str
        Space-separated ``key=value`` pairs, e.g. ``lr=0.003 method="disco"``.

    Raises
    ------
    ValueError
        For a key that is not a bare TOML key.
    """
    parts = []
    for key, value in values.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"run-config key {key!r} is not a bare TOML key")
        parts.append(f"{key}={format_override_value(value)}")
    return " ".join(parts)


def federation_config(
    num_supernodes: int, client_num_cpus: float, client_num_gpus: float
) -> str:
    """Render the simulation settings for ``flwr run --federation-config``.

    Parameters
    ----------
    num_supernodes : int
        Simulated SuperNodes (clients).
    client_num_cpus : float
        CPUs per ClientApp; Flower stores this as an unsigned integer.
    client_num_gpus : float
        GPUs per ClientApp (fractions allowed).

    Returns
    -------
    str
        ``num-supernodes=N client-resources-num-cpus=C client-resources-num-gpus=G``.

    Raises
    ------
    ValueError
        For fewer than one SuperNode, fractional or non-positive CPUs, negative GPUs.
    """
    if num_supernodes < 1:
        raise ValueError(f"num_supernodes must be >= 1, got {num_supernodes}")
    if client_num_cpus < 1 or not float(client_num_cpus).is_integer():
        raise ValueError(
            f"client_num_cpus must be a whole number >= 1 (Flower 1.41 stores it "
            f"as uint32), got {client_num_cpus}"
        )
    if client_num_gpus < 0:
        raise ValueError(f"client_num_gpus must be >= 0, got {client_num_gpus}")
    return (
        f"num-supernodes={int(num_supernodes)} "
        f"client-resources-num-cpus={int(client_num_cpus)} "
        f"client-resources-num-gpus={float(client_num_gpus)!r}"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _flwr_env(home: Path) -> dict[str, str]:
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


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/health", timeout=1.0
        ) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start_superlink(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """Start ``flower-superlink`` on a free loopback port and wait until healthy."""
    errors = []
    for attempt in range(_START_ATTEMPTS):
        port = _free_port()
        log_path = home / f"superlink-{attempt}.log"
        command = [
            _bin("flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            str(home / f"state-{attempt}.db"),
            "--disable-runtime-dependency-installation",
        ]
        with open(log_path, "w") as log_handle:
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if _healthy(port):
                (home / "config.toml").write_text(
                    f'[superlink]\ndefault = "{CONNECTION}"\n\n'
                    f"[superlink.{CONNECTION}]\n"
                    f'address = "127.0.0.1:{port}"\ninsecure = true\n'
                )
                return process, port
            time.sleep(0.2)
        reason = (
            f"exited with code {process.returncode}"
            if process.poll() is not None
            else f"not healthy after {_STARTUP_TIMEOUT_S:.0f} s"
        )
        stop_process_tree(process, grace_s=5.0)
        errors.append(f"port {port}: {reason}\n{_tail(log_path)}")
    raise FlowerRunError("flower-superlink could not start:\n" + "\n---\n".join(errors))


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
    for member in alive:
        try:
            member.terminate()
        except psutil.NoSuchProcess:
            pass
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
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5.0)
    process.wait()


def _flwr(args: list[str], env: dict[str, str], timeout: float = 120.0) -> Any:
    """Run ``flwr ARGS --format json``; return its JSON reply (or an error dict)."""
    try:
        result = subprocess.run(
            [_bin("flwr"), *args, "--format", "json"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"success": False, "error-message": f"flwr {args[0]} timed out"}
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return {"success": False, "error-message": result.stdout + result.stderr}


def run_status(run_id: int, env: dict[str, str]) -> dict[str, Any]:
    """Read one run's row from ``flwr ls --run-id ID --format json``.

    Parameters
    ----------
    run_id : int
        The run.
    env : dict
        Environment with ``FLWR_HOME`` pointing at the private config.

    Returns
    -------
    dict
        The row (keys ``run-id``, ``status``, ``status-details``, ``elapsed``,
        ``finished-at``, ...), or ``{"status": "unknown", "status-details": why}``.
    """
    reply = _flwr(["ls", CONNECTION, "--run-id", str(run_id)], env, timeout=60.0)
    try:
        return dict(reply["runs"][0])
    except (KeyError, IndexError, TypeError):
        return {"status": "unknown", "status-details": str(reply)}


def _follow_log(
    run_id: int,
    env: dict[str, str],
    lines: list[str],
    stream_to: TextIO | None,
) -> tuple[subprocess.Popen, threading.Thread]:
    follower = subprocess.Popen(
        [_bin("flwr"), "log", str(run_id), CONNECTION, "--stream"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def collect() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.append(line)
            if stream_to is not None:
                stream_to.write(line)
                stream_to.flush()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    return follower, reader


def await_run(
    run_id: int,
    env: dict[str, str],
    follower: subprocess.Popen,
    reader: threading.Thread,
    lines: list[str],
    timeout_s: float,
) -> RunOutcome:
    """Wait until run ``run_id`` finishes (or ``timeout_s`` passes); its outcome.

    ``follower`` is the ``flwr log --stream`` process (its stream ends when the run
    finishes) whose output ``reader`` collects into ``lines``.
    """
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = {"status": "unknown"}
    while time.monotonic() < deadline:
        try:  # the log stream ends when the run has finished
            follower.wait(timeout=min(15.0, max(deadline - time.monotonic(), 0)))
        except subprocess.TimeoutExpired:
            continue
        status = run_status(run_id, env)
        if str(status.get("status", "")).startswith("finished"):
            break
        time.sleep(2.0)  # stream broke off early: poll the status instead
    else:
        status = run_status(run_id, env)
        if not str(status.get("status", "")).startswith("finished"):
            status = {
                "status": "timeout",
                "status-details": f"not finished after {timeout_s:.0f} s "
                f"(last status {status.get('status')!r})",
            }
    final = str(status.get("status", "unknown"))
    if final.startswith("finished") and follower.poll() is None:
        try:  # the stream ends by itself once the run has finished
            follower.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            pass
    if follower.poll() is not None:
        reader.join(timeout=10.0)
    details = str(status.get("status-details", ""))
    return RunOutcome(
        run_id=run_id,
        status=final,
        completed=final == "finished:completed",
        log="".join(lines),
        details="" if details == "N/A" else details,
    )


def run_simulation_app(
    app_dir: Path,
    run_config: Mapping[str, ConfigValue],
    *,
    num_supernodes: int,
    client_num_cpus: float = 1.0,
    client_num_gpus: float = 0.0,
    timeout_s: float = 1800.0,
    stream_to: TextIO | None = None,
) -> RunOutcome:
    """Run the Flower app at ``app_dir`` in simulation and wait for its end.

    Parameters
    ----------
    app_dir : Path
        Directory holding the app's ``pyproject.toml``.
    run_config : Mapping
        Run-config overrides (``str``, ``int``, ``float`` or ``bool`` values).
    num_supernodes : int
        Simulated clients.
    client_num_cpus : float
        Ray CPUs of each ClientApp (a whole number).
    client_num_gpus : float
        Ray GPUs of each ClientApp.
    timeout_s : float
        Give up (and stop everything) after this many seconds of running.
    stream_to : TextIO, optional
        Where to echo the run's log as it comes.

    Returns
    -------
    RunOutcome
        Flower's final status; ``completed`` is true only for a successful run.

    Raises
    ------
    FlowerRunError
        If the SuperLink cannot start or ``flwr run`` cannot submit the run.
    ValueError
        For invalid simulation settings or run-config keys, or GPUs per client
        when no CUDA GPU is visible.
    """
    overrides = format_overrides(run_config)
    federation = federation_config(num_supernodes, client_num_cpus, client_num_gpus)
    if client_num_gpus > 0:  # issue 7: fail here, not as Ray actors that never start
        require_cuda(f"client-resources-num-gpus={client_num_gpus:g}")
    home = Path(tempfile.mkdtemp(prefix="fcit-flwr-"))
    env = _flwr_env(home)
    superlink: subprocess.Popen | None = None
    follower: subprocess.Popen | None = None
    lines: list[str] = []
    try:
        superlink, _ = _start_superlink(home, env)
        submit_args = ["run", str(Path(app_dir).resolve()), CONNECTION]
        if overrides:
            submit_args += ["--run-config", overrides]
        submit_args += ["--federation-config", federation]
        reply = _flwr(submit_args, env, timeout=300.0)
        if not isinstance(reply, dict) or not reply.get("success"):
            message = reply.get("error-message") if isinstance(reply, dict) else reply
            raise FlowerRunError(f"flwr run could not submit the run: {message}")
        run_id = int(reply["run-id"])
        follower, reader = _follow_log(run_id, env, lines, stream_to)
        return await_run(run_id, env, follower, reader, lines, timeout_s)
    finally:
        if follower is not None:
            stop_process_tree(follower, grace_s=2.0)
        if superlink is not None:
            stop_process_tree(superlink)
        shutil.rmtree(home, ignore_errors=True)
