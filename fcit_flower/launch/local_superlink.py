"""Stop the SuperLink that a plain ``flwr run`` starts and leaves running.

With the ``local`` connection (the default of ``~/.flwr/config.toml``), ``flwr run``
starts a detached ``flower-superlink --simulation`` that writes its log to
``$FLWR_HOME/local-superlink/superlink.log`` and keeps running after the run;
Flower (1.41, 1.42) has no command to stop it. It is recognised by that log file
in its command line, so SuperLinks that ``fcit-flower compare`` or a deployment
started (each with its own ``FLWR_HOME``) are never touched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import psutil

from fcit_flower.launch.process import signal_each


def managed_log_file(flwr_home: Path | None = None) -> Path:
    """The log file Flower gives its managed local SuperLink."""
    if flwr_home is None:
        flwr_home = Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")
    return flwr_home / "local-superlink" / "superlink.log"


def is_managed_superlink(cmdline: Sequence[str], *, log_file: Path) -> bool:
    """Whether ``cmdline`` is Flower's managed local SuperLink logging to ``log_file``.

    Parameters
    ----------
    cmdline : sequence of str
        A process's command line (``python .../flower-superlink ...`` included).
    log_file : Path
        :func:`managed_log_file` of the Flower home in question.

    Returns
    -------
    bool
        True for ``flower-superlink ... --log-file <log_file>`` only.
    """
    args = list(cmdline)
    if not any(Path(a).name == "flower-superlink" for a in args[:2]):
        return False
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "--log-file" and Path(value) == log_file:
            return True
    return False


def stop_managed_superlinks(
    *, flwr_home: Path | None = None, grace_s: float = 10.0
) -> list[int]:
    """Stop this user's managed local SuperLinks and every process they started.

    Parameters
    ----------
    flwr_home : Path, optional
        Flower's home; ``$FLWR_HOME`` or ``~/.flwr`` by default.
    grace_s : float
        Seconds between SIGTERM and SIGKILL.

    Returns
    -------
    list of int
        Process ids of the SuperLinks found (empty when none was running).
    """
    log_file = managed_log_file(flwr_home)
    uid = os.getuid()
    found: list[psutil.Process] = []
    for process in psutil.process_iter(["cmdline", "uids"]):
        uids = process.info.get("uids")
        cmdline = process.info.get("cmdline") or []
        if uids is not None and uids.real == uid:
            if is_managed_superlink(cmdline, log_file=log_file):
                found.append(process)
    tree: list[psutil.Process] = []
    for superlink in found:
        try:
            tree += [superlink, *superlink.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    signal_each(tree)
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    signal_each(alive, kill=True)
    return [p.pid for p in found]
