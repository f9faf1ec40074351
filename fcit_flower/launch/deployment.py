"""A real (non-simulated) Flower deployment with TLS and node auth.

What a multi-site deployment does: ``docker/certs.sh`` writes a CA, the
SuperLink's TLS certificate (valid for its address) and one OpenSSH ECDSA key pair
per SuperNode; ``flower-superlink`` starts with TLS and ``--enable-supernode-auth``;
each node's public key is registered with ``flwr supernode register``; each
``flower-supernode`` connects with its private key and its own ``--node-config``
(``partition-id``, optionally ``data-root`` and the site's other settings);
``flwr run`` submits the app. On 127.0.0.1 by default; with ``host`` and a
command prefix per SuperNode (``ip netns exec ...``) the sites run on other
hosts (``tests/network_namespaces.py``). Every port is a free one picked now, and
the kit's ``stop_process_tree`` stops exactly the processes started here (and what
they spawned), whatever happens.

Run it by hand on loopback with ``scripts/loopback_deploy.sh``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

from fcit_flower.launch import process as kit
from fcit_flower.launch.process import CONNECTION, FlowerRunError
from fcit_flower.launch.runs import (
    ConfigValue,
    RunOutcome,
    flwr_json,
    format_overrides,
    submit_run,
    watch_run,
)

CERTS_SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "certs.sh"
"""The certificate script of the source tree (``docker/certs.sh``)."""


def make_certs(
    out: Path,
    num_nodes: int,
    script: Path = CERTS_SCRIPT,
    hosts: Sequence[str] = (),
) -> Path:
    """Write TLS certificates and ``num_nodes`` node key pairs into ``out``.

    ``hosts``: addresses the SuperLink certificate must be valid for besides
    ``localhost`` and ``127.0.0.1``.

    Raises
    ------
    FlowerRunError
        When the script is missing or fails.
    """
    if not script.is_file():
        raise FlowerRunError(f"certificate script {script} not found")
    result = subprocess.run(
        ["bash", str(script), str(out), str(num_nodes), *hosts],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise FlowerRunError(f"{script} failed: {result.stderr.strip()}")
    return out


def node_config_arg(values: Mapping[str, ConfigValue]) -> str:
    """Render a SuperNode's ``--node-config`` (``partition-id=0 data-root="/d"``)."""
    return format_overrides(values)


@dataclass(frozen=True)
class SiteHost:
    """Where one SuperNode runs and the files it has there.

    Attributes
    ----------
    private_key, root_certificates : Path
        The site's node key and the CA certificate, as the site holds them.
    home : Path, optional
        The site's ``FLWR_HOME`` (default: the deployment's).
    prefix : sequence of str
        Command prefix that puts the SuperNode on its host (``ip netns exec NS``).
    """

    private_key: Path
    root_certificates: Path
    home: Path | None = None
    prefix: Sequence[str] = ()


@dataclass
class Deployment:
    """One SuperLink and its SuperNodes, all with TLS and node auth.

    Use as a context manager: leaving it stops every process it started.

    Attributes
    ----------
    home : Path
        Private ``FLWR_HOME``: ``config.toml``, certificates, state, logs.
    host : str
        The SuperLink's address (it listens there; its certificate names it).
    port : int
        The SuperLink's port (Fleet, Control and health over HTTPS).
    """

    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fd-")))
    host: str = "127.0.0.1"
    port: int = 0
    superlink: subprocess.Popen | None = None
    supernodes: list[subprocess.Popen] = field(default_factory=list)
    node_logs: list[Path] = field(default_factory=list)
    keep_home: bool = False

    @property
    def certs(self) -> Path:
        """Directory of the certificates and node keys."""
        return self.home / "certs"

    @property
    def env(self) -> dict[str, str]:
        """Environment of every Flower command of this deployment."""
        return kit.flwr_env(self.home)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def start_superlink(self, num_keys: int) -> None:
        """Write certificates and ``num_keys`` node keys; start the SuperLink."""
        extra = [] if self.host in ("127.0.0.1", "localhost") else [self.host]
        make_certs(self.certs, num_keys, hosts=extra)
        self.port = kit.free_port()
        log_path = self.home / "superlink.log"
        ca = self.certs / "ca.crt"
        command = [
            kit.flwr_bin("flower-superlink"),
            "--ssl-certfile",
            str(self.certs / "server.pem"),
            "--ssl-keyfile",
            str(self.certs / "server.key"),
            "--ssl-ca-certfile",
            str(ca),
            "--enable-supernode-auth",
            "--isolation",
            "subprocess",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--database",
            str(self.home / "state.db"),
            "--disable-runtime-dependency-installation",
        ]
        self.superlink = kit.start_logged(command, self.env, log_path)
        if not kit.wait_healthy(
            self.superlink, partial(kit.healthy, self.port, ca, self.host)
        ):
            raise FlowerRunError(
                f"flower-superlink did not start:\n{kit.log_tail(log_path)}"
            )
        kit.write_connection(self.home, self.port, ca, self.host)

    def register(self, key: int | Path) -> int:
        """Authorize a node's public key: ``flwr supernode register KEY.pub``.

        ``key``: the number of a key this deployment wrote (``node-K.pub``), or the
        path of a public key a site sent. Returns the node id Flower gave the key
        (what ``site-nodes`` binds).
        """
        public = key if isinstance(key, Path) else self.certs / f"node-{key}.pub"
        reply = flwr_json(["supernode", "register", str(public), CONNECTION], self.env)
        if not isinstance(reply, dict) or not reply.get("success"):
            raise FlowerRunError(f"could not register {public}: {reply}")
        return int(reply["node-id"])

    def start_supernode(
        self,
        key: int,
        node_config: Mapping[str, ConfigValue],
        max_wait_s: float | None = None,
        *,
        site: SiteHost | None = None,
    ) -> subprocess.Popen:
        """Start a SuperNode authenticating with node key ``key``.

        ``site``: where the SuperNode runs and with which files (default: this
        machine, the deployment's home and keys).
        """
        site = site or SiteHost(self.certs / f"node-{key}", self.certs / "ca.crt")
        log_path = self.home / f"supernode-{key}.log"
        command = [
            *site.prefix,
            kit.flwr_bin("flower-supernode"),
            "--superlink",
            f"{self.host}:{self.port}",
            "--root-certificates",
            str(site.root_certificates),
            "--auth-supernode-private-key",
            str(site.private_key),
            "--node-config",
            node_config_arg(node_config),
            "--isolation",
            "subprocess",
            # The node's own ClientAppIo API: for its SuperExec, on the site itself.
            "--host",
            "127.0.0.1",
            "--port",
            str(kit.free_port()),
        ]
        if max_wait_s is not None:
            command += ["--max-wait-time", str(max_wait_s)]
        env = self.env if site.home is None else kit.flwr_env(site.home)
        process = kit.start_logged(command, env, log_path)
        self.supernodes.append(process)
        self.node_logs.append(log_path)
        return process

    def run(
        self,
        app_dir: Path,
        run_config: Mapping[str, ConfigValue],
        timeout_s: float = 600.0,
        stream_to: TextIO | None = None,
    ) -> RunOutcome:
        """Submit the app with ``flwr run`` and wait for its end."""
        run_id = submit_run(app_dir, run_config, self.env)
        return watch_run(run_id, self.env, timeout_s, stream_to)

    def stop(self) -> None:
        """Stop the SuperNodes, then the SuperLink (each with its process tree)."""
        for process in self.supernodes:
            kit.stop_process_tree(process, grace_s=5.0)
        if self.superlink is not None:
            kit.stop_process_tree(self.superlink)


def run_loopback(
    app_dir: Path,
    run_config: Mapping[str, ConfigValue],
    node_configs: Sequence[Mapping[str, ConfigValue]],
    timeout_s: float = 600.0,
    stream_to: TextIO | None = None,
) -> RunOutcome:
    """Deploy on loopback (TLS + node auth), run the app once, stop everything.

    Parameters
    ----------
    app_dir, run_config, timeout_s, stream_to
        As :func:`fcit_flower.launch.simulation.run_simulation_app`.
    node_configs : Sequence of Mapping
        One node config per SuperNode (e.g. ``{"partition-id": 0}``).

    Returns
    -------
    RunOutcome
        Flower's final status of the run.
    """
    with Deployment() as deployment:
        deployment.start_superlink(len(node_configs))
        for key, node_config in enumerate(node_configs, start=1):
            deployment.register(key)
            deployment.start_supernode(key, node_config)
        return deployment.run(app_dir, run_config, timeout_s, stream_to)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fcit_flower.launch.deployment [--nodes N] [KEY=VALUE...]``."""
    import argparse
    import json
    import sys
    import tomllib

    parser = argparse.ArgumentParser(
        description="Run the app once on a loopback deployment "
        "(SuperLink + N SuperNodes, TLS, node authentication)."
    )
    parser.add_argument("--app", type=Path, default=Path.cwd())
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("overrides", nargs="*", help="run-config KEY=VALUE (TOML)")
    args = parser.parse_args(argv)
    run_config: dict[str, ConfigValue] = {"num-clients": args.nodes}
    for item in args.overrides:
        run_config.update(tomllib.loads(item))
    nodes = [
        {"partition-id": k, "num-partitions": args.nodes} for k in range(args.nodes)
    ]
    outcome = run_loopback(args.app, run_config, nodes, args.timeout, sys.stdout)
    print(json.dumps({"run-id": outcome.run_id, "status": outcome.status}))
    return 0 if outcome.completed else 1


if __name__ == "__main__":
    raise SystemExit(main())
