"""Run the app through Flower's simulation engine, robustly.

A private SuperLink with ``--simulation`` on a free loopback port, the app submitted
with the simulation settings as ``--federation-config`` (1.41 deprecates the
``options`` table of a connection in favour of this flag), the log followed to the
end, the final status read, and every process started here stopped
(:mod:`fcit_flower.launch.process`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TextIO

from fcit_flower.config import require_cuda
from fcit_flower.launch.process import (
    STARTUP_TIMEOUT_S,
    FlowerRunError,
    flwr_bin,
    flwr_env,
    free_port,
    healthy,
    log_tail,
    start_logged,
    stop_process_tree,
    wait_healthy,
    write_connection,
)
from fcit_flower.launch.runs import (
    ConfigValue,
    RunOutcome,
    format_overrides,
    submit_run,
    watch_run,
)

START_ATTEMPTS = 3


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


def start_simulation_superlink(
    home: Path, env: dict[str, str]
) -> tuple[subprocess.Popen, int]:
    """Start ``flower-superlink --simulation`` on a free port and wait until healthy.

    Raises
    ------
    FlowerRunError
        If it does not start after a few ports.
    """
    errors = []
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        log_path = home / f"superlink-{attempt}.log"
        command = [
            flwr_bin("flower-superlink"),
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
        process = start_logged(command, env, log_path)
        if wait_healthy(process, partial(healthy, port)):
            write_connection(home, port)
            return process, port
        reason = (
            f"exited with code {process.returncode}"
            if process.poll() is not None
            else f"not healthy after {STARTUP_TIMEOUT_S:.0f} s"
        )
        stop_process_tree(process, grace_s=5.0)
        errors.append(f"port {port}: {reason}\n{log_tail(log_path)}")
    raise FlowerRunError("flower-superlink could not start:\n" + "\n---\n".join(errors))


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
    format_overrides(run_config)  # bad keys or values fail before anything starts
    federation = federation_config(num_supernodes, client_num_cpus, client_num_gpus)
    if client_num_gpus > 0:  # fail here, not as Ray actors that never start
        require_cuda(f"client-resources-num-gpus={client_num_gpus:g}")
    home = Path(tempfile.mkdtemp(prefix="fcit-flwr-"))
    env = flwr_env(home)
    superlink: subprocess.Popen | None = None
    try:
        superlink, _ = start_simulation_superlink(home, env)
        run_id = submit_run(app_dir, run_config, env, federation)
        return watch_run(run_id, env, timeout_s, stream_to)
    finally:
        if superlink is not None:
            stop_process_tree(superlink)
        shutil.rmtree(home, ignore_errors=True)
