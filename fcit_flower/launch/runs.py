"""Flower runs of a launch: run-config overrides, submission, log, final status.

``flwr run --stream`` exits 0 even when the ServerApp crashes, so a run is submitted
with ``flwr run --format json`` (which prints the run id), its log followed with
``flwr log ID --stream`` (which ends when the run finishes), and its final status
read with ``flwr ls --run-id ID --format json``.
"""

from __future__ import annotations

import json
import numbers
import re
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fcit_flower.launch.process import (
    CONNECTION,
    FlowerRunError,
    flwr_bin,
    stop_process_tree,
)

ConfigValue = str | int | float | bool
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


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


def flwr_json(args: list[str], env: dict[str, str], timeout: float = 120.0) -> Any:
    """Run ``flwr ARGS --format json``; return its JSON reply (or an error dict)."""
    try:
        result = subprocess.run(
            [flwr_bin("flwr"), *args, "--format", "json"],
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
    reply = flwr_json(["ls", CONNECTION, "--run-id", str(run_id)], env, timeout=60.0)
    try:
        return dict(reply["runs"][0])
    except (KeyError, IndexError, TypeError):
        return {"status": "unknown", "status-details": str(reply)}


def follow_log(
    run_id: int,
    env: dict[str, str],
    lines: list[str],
    stream_to: TextIO | None,
) -> tuple[subprocess.Popen, threading.Thread]:
    """Start ``flwr log ID --stream``; a thread collects its lines into ``lines``."""
    follower = subprocess.Popen(
        [flwr_bin("flwr"), "log", str(run_id), CONNECTION, "--stream"],
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


def submit_run(
    app_dir: Path,
    run_config: Mapping[str, ConfigValue],
    env: dict[str, str],
    federation: str | None = None,
) -> int:
    """Submit the app at ``app_dir`` with ``flwr run``; its run id.

    Raises
    ------
    FlowerRunError
        If ``flwr run`` cannot submit the run.
    """
    args = ["run", str(Path(app_dir).resolve()), CONNECTION]
    if run_config:
        args += ["--run-config", format_overrides(run_config)]
    if federation is not None:
        args += ["--federation-config", federation]
    reply = flwr_json(args, env, timeout=300.0)
    if not isinstance(reply, dict) or not reply.get("success"):
        message = reply.get("error-message") if isinstance(reply, dict) else reply
        raise FlowerRunError(f"flwr run could not submit the run: {message}")
    return int(reply["run-id"])


def watch_run(
    run_id: int,
    env: dict[str, str],
    timeout_s: float,
    stream_to: TextIO | None = None,
) -> RunOutcome:
    """Follow run ``run_id``'s log until it finishes (or ``timeout_s``); its outcome."""
    lines: list[str] = []
    follower, reader = follow_log(run_id, env, lines, stream_to)
    try:
        return await_run(run_id, env, follower, reader, lines, timeout_s)
    finally:
        stop_process_tree(follower, grace_s=2.0)
