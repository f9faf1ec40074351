"""Hosts on a private network, on one machine: Linux network namespaces on a bridge.

The root namespace is the coordinator's host (``.1`` on the bridge); every other
host is a network namespace with its own loopback and one address on a veth pair
whose other end is on the bridge. A host's command runs through ``ip netns exec``
and, so that it cannot read what only the coordinator has, in its own mount
namespace with an empty tmpfs over each hidden path. Needs root and ``ip``.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def unavailable() -> str:
    """Why namespaces cannot be used here ("" when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found"
    probe = f"fcprobe{secrets.token_hex(2)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


def _random_subnet() -> str:
    """A /24 in 10/8, random: two test runs on one machine do not share one."""
    return f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250)}"


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


@dataclass
class Network:
    """A bridge with the coordinator on it, and hosts added one namespace each.

    Use as a context manager: leaving it deletes every namespace and the bridge.
    """

    # random, so that two test runs on one machine do not share a subnet
    subnet: str = field(
        default_factory=lambda: (
            f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250)}"
        )
    )
    name: str = field(default_factory=lambda: f"fc{secrets.token_hex(2)}")
    namespaces: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def coordinator(self) -> str:
        """The coordinator's address on the bridge."""
        return f"{self.subnet}.1"

    def __enter__(self) -> Network:
        _ip("link", "add", self.name, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.coordinator}/24", "dev", self.name)
            _ip("link", "set", self.name, "up")
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for namespace in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.name], capture_output=True)

    def add_host(self, host: str) -> str:
        """A new host (namespace) on the bridge; returns its address."""
        index = len(self.namespaces) + 2
        namespace, veth = f"{self.name}-{host}", f"{self.name}v{index}"
        address = f"{self.subnet}.{index}"
        subprocess.run(["ip", "netns", "add", namespace], check=True)
        # recorded at once: __exit__ deletes it (and its veth) if the rest fails
        self.namespaces[host], self.addresses[host] = namespace, address
        _ip("link", "add", veth, "type", "veth", "peer", "eth0", "netns", namespace)
        _ip("link", "set", veth, "master", self.name, "up")
        _ip("addr", "add", f"{address}/24", "dev", "eth0", namespace=namespace)
        _ip("link", "set", "eth0", "up", namespace=namespace)
        _ip("link", "set", "lo", "up", namespace=namespace)
        return address

    def prefix(self, host: str, hide: Sequence[Path] = ()) -> list[str]:
        """Command prefix that runs a command on ``host`` with ``hide`` emptied.

        The command follows the prefix: ``sh -c SCRIPT command args...`` mounts an
        empty tmpfs over each hidden path, then execs it (``$0 $@``).
        """
        mounts = "".join(
            f"mount -t tmpfs tmpfs {shlex.quote(str(p))} || exit 97; " for p in hide
        )
        script = mounts + 'exec "$0" "$@"'
        return [
            "ip",
            "netns",
            "exec",
            self.namespaces[host],
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ]
