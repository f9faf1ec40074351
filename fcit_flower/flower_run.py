"""Run the app through Flower's simulation engine, robustly.

``flwr run`` in Flower 1.41 talks to a SuperLink named in ``$FLWR_HOME/config.toml``;
for a local simulation it would start a detached SuperLink and leave it running, and
``flwr run --stream`` exits 0 even when the ServerApp crashes. So this module:

1. makes a private ``FLWR_HOME`` with one connection to loopback ports picked now;
2. starts ``flower-superlink --simulation`` itself (own process group, log file);
3. submits with ``flwr run --format json`` (the run id), follows ``flwr log``;
4. polls ``flwr ls --run-id ID --format json`` until the run has finished and
   reports its final status;
5. always stops the process group it started, and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

ConfigValue = str | int | float | bool


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
        Final status as Flower reports it, e.g. ``finished:completed``.
    completed : bool
        True only when Flower reports the run completed successfully.
    log : str
        The run's log (ServerApp and ClientApp output).
    """

    run_id: int
    status: str
    completed: bool
    log: str


def format_overrides(values: Mapping[str, ConfigValue]) -> str:
    """Render run-config overrides in ``flwr run --run-config`` (TOML) syntax."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int | float):
            rendered = repr(value)
        else:
            rendered = json.dumps(str(value))  # a TOML basic string
        parts.append(f"{key}={rendered}")
    return " ".join(parts)


def _number(value: float) -> int | float:
    """Integral values as ``int`` (Flower's CLI parses ``1.0`` as a float)."""
    return int(value) if float(value).is_integer() else value


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def _flwr_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _wait_port(
    port: int, process: subprocess.Popen, deadline: float, log: Path
) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FlowerRunError(
                f"flower-superlink exited ({process.returncode}); see {log}"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise FlowerRunError(f"flower-superlink did not listen on {port}; see {log}")


def stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop ``process``, its process group and every descendant it spawned.

    Ray's workers and agents start their own sessions, so the descendants are listed
    (while they are still attached) and stopped one by one as well.
    """
    import psutil

    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    for child in descendants:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(descendants, timeout=grace_s)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def _run_status(run_id: int, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [_bin("flwr"), "ls", "fcit", "--run-id", str(run_id), "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        payload = json.loads(result.stdout)
        return dict(payload["runs"][0])
    except (json.JSONDecodeError, KeyError, IndexError):
        return {"status": "unknown", "status-details": result.stdout + result.stderr}


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
        Run-config overrides.
    num_supernodes : int
        Simulated clients.
    client_num_cpus, client_num_gpus : float
        Ray resources of each ClientApp.
    timeout_s : float
        Give up (and stop everything) after this many seconds.
    stream_to : TextIO, optional
        Where to echo the run's log as it comes.

    Returns
    -------
    RunOutcome
        Flower's final status; ``completed`` is true only for a successful run.
    """
    home = Path(tempfile.mkdtemp(prefix="fcit-flwr-"))
    http_port, fleet_port, control_port = _free_ports(3)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "fcit"\n\n[superlink.fcit]\n'
        f'address = "127.0.0.1:{http_port}"\ninsecure = true\n'
    )
    env = _flwr_env(home)
    superlink_log = home / "superlink.log"
    with open(superlink_log, "w") as log_handle:
        superlink = subprocess.Popen(
            [
                _bin("flower-superlink"),
                "--insecure",
                "--simulation",
                "--isolation",
                "subprocess",
                "--host",
                "127.0.0.1",
                "--port",
                str(http_port),
                "--fleet-api-address",
                f"127.0.0.1:{fleet_port}",
                "--control-api-address",
                f"127.0.0.1:{control_port}",
                "--database",
                str(home / "state.db"),
                "--disable-runtime-dependency-installation",
            ],
            env=env,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    follower: subprocess.Popen | None = None
    lines: list[str] = []
    try:
        _wait_port(http_port, superlink, time.monotonic() + 60, superlink_log)
        federation = (
            f"num-supernodes={num_supernodes} "
            f"client-resources-num-cpus={_number(client_num_cpus)} "
            f"client-resources-num-gpus={_number(client_num_gpus)}"
        )
        submit = subprocess.run(
            [
                _bin("flwr"),
                "run",
                str(app_dir),
                "fcit",
                "--run-config",
                format_overrides(run_config),
                "--federation-config",
                federation,
                "--format",
                "json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        try:
            reply = json.loads(submit.stdout)
        except json.JSONDecodeError:
            reply = {"success": False, "error-message": submit.stdout + submit.stderr}
        if not reply.get("success"):
            raise FlowerRunError(
                f"flwr run failed: {reply.get('error-message', reply)}"
            )
        run_id = int(reply["run-id"])
        follower = subprocess.Popen(
            [_bin("flwr"), "log", str(run_id), "fcit", "--stream"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        reader = threading.Thread(
            target=_collect, args=(follower, lines, stream_to), daemon=True
        )
        reader.start()
        deadline = time.monotonic() + timeout_s
        status: dict = {}
        while time.monotonic() < deadline:
            status = _run_status(run_id, env)
            if str(status.get("status", "")).startswith("finished"):
                break
            time.sleep(2.0)
        else:
            status = {"status": f"timeout after {timeout_s:.0f} s"}
        final = str(status.get("status", "unknown"))
        details = str(status.get("status-details", ""))
        time.sleep(1.0)  # let the log follower catch the last lines
        return RunOutcome(
            run_id=run_id,
            status=final if details in ("", "N/A") else f"{final} ({details})",
            completed=final == "finished:completed",
            log="".join(lines),
        )
    finally:
        if follower is not None:
            stop_process_group(follower, grace_s=2.0)
        stop_process_group(superlink)
        shutil.rmtree(home, ignore_errors=True)


def _collect(
    process: subprocess.Popen, lines: list[str], stream_to: TextIO | None
) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if stream_to is not None:
            stream_to.write(line)
            stream_to.flush()
