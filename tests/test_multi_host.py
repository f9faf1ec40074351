"""A deployment across network boundaries: a coordinator, two sites and a rogue
host, each site in its own network and mount namespace (tests/network_namespaces.py).

TLS and SuperNode authentication; each site made its own key pair and sent the
public key; each site holds only its own train data and cannot see any path of
the coordinator (data, results, certificates, Flower state are empty tmpfs there);
the rogue host registers a key of its own through the SuperLink's open Control
API and claims site 0. Site 0 does its work in a long-lived site worker; site 1
is killed after the first checkpoint.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import network_namespaces
import pytest
from site_data import site_directories

from fcit_flower.inprocess import small_run_config
from fcit_flower.launch import process as kit
from fcit_flower.launch.deployment import Deployment, SiteHost
from fcit_flower.launch.runs import submit_run, watch_run
from fcit_flower.site_worker import WORKER_KEY

ROOT = Path(__file__).resolve().parents[1]
WHY_NOT = network_namespaces.unavailable()


def _own_key(folder: Path) -> Path:
    """A site's key pair, made at the site: only the ``.pub`` leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "node"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(key)],
        check=True,
    )
    return key


def _wait_for(pattern: str, directory: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if list(directory.glob(pattern)):
            return True
        time.sleep(1.0)
    return False


@pytest.mark.flower
@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "-")
def test_sites_on_other_hosts_survive_a_lost_site_and_refuse_a_rogue(tmp_path, request):
    sizes = small_run_config(
        clients=2, per_round=2, train_size=12, test_size=4, min_client_size=2
    )
    coordinator_data, site_data = site_directories(tmp_path, sizes)
    rogue_data = tmp_path / "rogue" / "data"  # a copy of site 0's: it claims site 0
    shutil.copytree(site_data[0], rogue_data)
    results = tmp_path / "coordinator" / "results"
    with (
        network_namespaces.Network() as network,
        Deployment(host=network.coordinator) as deployment,
    ):
        coordinator_only = [tmp_path / "coordinator", deployment.home]
        names = ("site-0", "site-1", "rogue")
        deployment.start_superlink(num_keys=0)
        ca = deployment.certs / "ca.crt"  # public: every site gets a copy
        hosts = {}
        for name in names:
            network.add_host(name)
            folder = tmp_path / name
            # a host sees none of the coordinator's files nor the other hosts'
            others = [tmp_path / other for other in names if other != name]
            hidden = [*coordinator_only, *others]
            folder.mkdir(exist_ok=True)
            shutil.copy(ca, _own_key(folder / "keys").parent / "ca.crt")
            (folder / "home").mkdir()
            hosts[name] = SiteHost(
                folder / "keys" / "node",
                folder / "keys" / "ca.crt",
                home=folder / "home",
                prefix=network.prefix(name, hide=hidden),
            )
        # What a site sees of the coordinator's files and another site's: nothing.
        for folder in (coordinator_data.parent, tmp_path / "site-1"):
            assert any(folder.iterdir())  # there is something to see here
            peek = [*hosts["site-0"].prefix, "ls", "-A", str(folder)]
            seen = subprocess.run(peek, capture_output=True, text=True)
            assert (seen.returncode, seen.stdout) == (0, ""), seen.stderr
        ids = [
            deployment.register(Path(f"{hosts[s].private_key}.pub"))
            for s in ("site-0", "site-1")
        ]
        # The rogue registers itself from its own host through the Control API.
        rogue = hosts["rogue"]
        assert rogue.home is not None
        kit.write_connection(
            rogue.home, deployment.port, rogue.root_certificates, network.coordinator
        )
        registered = subprocess.run(
            [
                *rogue.prefix,
                kit.flwr_bin("flwr"),
                "supernode",
                "register",
                f"{rogue.private_key}.pub",
                kit.CONNECTION,
                "--format",
                "json",
            ],
            env=kit.flwr_env(rogue.home),
            capture_output=True,
            text=True,
        )
        rogue_id = int(json.loads(registered.stdout)["node-id"])
        # Site 0 runs its work in a long-lived worker on its own host.
        socket = tmp_path / "site-0" / "worker.sock"
        worker = subprocess.Popen(
            [
                *hosts["site-0"].prefix,
                sys.executable,
                "-m",
                "fcit_flower.site_worker",
                "--socket",
                str(socket),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        request.addfinalizer(worker.kill)  # whatever happens below
        assert worker.stdout is not None and "listening" in worker.stdout.readline()
        for key, (name, site) in enumerate(
            (("site-0", 0), ("site-1", 1), ("rogue", 0)), start=1
        ):
            data = site_data[site] if name != "rogue" else rogue_data
            node = {"site-id": site, "data-root": str(data)}
            if name == "site-0":
                node[WORKER_KEY] = str(socket)
            deployment.start_supernode(key, node, site=hosts[name])
        run_config = {
            **sizes,
            "method": "disco",
            "data-root": str(coordinator_data),
            "min-clients-per-round": 1,
            "site-nodes": f"0={ids[0]},1={ids[1]}",
            "results-dir": str(results),
            "run-name": "multi-host",
        }
        run_id = submit_run(ROOT, run_config, deployment.env)
        assert _wait_for("ckpt-*", results / "multi-host" / "checkpoints", 600)
        kit.stop_process_tree(deployment.supernodes[1], grace_s=1.0)
        outcome = watch_run(run_id, deployment.env, timeout_s=900)
        logs = [path.read_text() for path in deployment.node_logs]
        worker.terminate()
        worker_log = worker.communicate(timeout=30)[0]
    assert outcome.status == "finished:completed", outcome.details + outcome.log[-3000:]
    metrics = json.loads((results / "multi-host" / "metrics.json").read_text())
    assert metrics["complete"] is True and len(metrics["accuracy_matrix"]) == 2
    failures = [r for r in metrics["rejected_uploads"] if r["client"] != 1]
    assert failures == [], failures  # the lost site's failures count under site 1
    assert f"refused: node {rogue_id} (claims site 0) is not in site-nodes" in (
        outcome.log
    )
    assert "clients [1] not connected (lost sites)" in outcome.log
    # The rogue got the discovery question and nothing else: no adapters, no
    # identity-token query.
    received = [line for line in logs[2].splitlines() if "Receiving:" in line]
    assert len(received) == 1 and "query message" in received[0], received
    assert "Receiving: train message" in logs[0]
    assert "site worker: train ok" in worker_log  # site 0's work, in its worker
    sites = json.loads((results / "multi-host" / "sites.json").read_text())
    admitted = {r["partition-id"]: r for r in sites.values() if r["admitted"]}
    assert set(admitted) == {0, 1}
    for site, report in admitted.items():
        assert report["site-settings"] == f"data-root={site_data[site]}"
        assert report["data-fingerprint"]  # the site's own train files
