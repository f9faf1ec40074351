"""Multi-site deployment: certificates, compose file, per-site data, and a
real loopback deployment with TLS and SuperNode authentication."""

import json
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import yaml

from fcit_flower.client_handlers import client_position, site_data_root
from fcit_flower.inprocess import small_run_config
from fcit_flower.launch.deployment import CERTS_SCRIPT, Deployment

ROOT = Path(__file__).resolve().parents[1]
TINY = small_run_config(
    clients=2, per_round=2, train_size=12, test_size=4, min_client_size=2
)


def _context(**node):
    return SimpleNamespace(node_config=node)


def test_certs_script_writes_verifiable_tls_and_node_keys(tmp_path):
    subprocess.run(["bash", str(CERTS_SCRIPT), str(tmp_path), "2"], check=True)
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp_path / "ca.crt", tmp_path / "server.pem"],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    san = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName"],
        input=(tmp_path / "server.pem").read_text(),
        capture_output=True,
        text=True,
    ).stdout
    assert "127.0.0.1" in san and "superlink" in san
    for k in (1, 2):
        assert (
            (tmp_path / f"node-{k}.pub").read_text().startswith("ecdsa-sha2-nistp384")
        )
        assert (tmp_path / f"node-{k}").stat().st_mode & 0o077 == 0  # private


def test_certs_are_git_ignored():
    ignored = subprocess.run(
        ["git", "check-ignore", "docker/certs/ca.key", "docker/sites/site-0/x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == ["docker/certs/ca.key", "docker/sites/site-0/x"]


def test_compose_file_parses_and_enables_tls_and_node_auth():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    link = services["superlink"]["command"]
    assert "--enable-supernode-auth" in link
    assert "--insecure" not in link
    assert any(a.startswith("--ssl-certfile=") for a in link)
    nodes = [name for name in services if name.startswith("supernode-")]
    assert len(nodes) == 2
    for index, name in enumerate(sorted(nodes)):
        command = services[name]["command"]
        assert f"--auth-supernode-private-key=/keys/node-{index + 1}" in command
        assert any(a.startswith("--root-certificates=") for a in command)
        assert f"--node-config=site-id={index} " + 'data-root="/data"' in command
    for name, service in services.items():
        dockerfile = ROOT / "docker" / Path(service["build"]["dockerfile"]).name
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        assert "FROM flwr/" in dockerfile.read_text()


def test_site_position_accepts_site_id_and_refuses_positions_outside_schedule():
    assert client_position(_context(**{"partition-id": 1}), 2) == 1
    assert client_position(_context(**{"site-id": 0}), 2) == 0
    with pytest.raises(ValueError, match=r"site 5 .* not in the schedule"):
        client_position(_context(**{"site-id": 5}), 2)
    with pytest.raises(ValueError, match="lacks 'partition-id' or 'site-id'"):
        client_position(_context(), 2)


def test_site_data_root_missing_directory_is_a_clear_error(tmp_path):
    assert site_data_root(_context(), 0) is None
    assert site_data_root(_context(**{"data-root": str(tmp_path)}), 0) == tmp_path
    with pytest.raises(ValueError, match=r"site 1: node-config data-root '.*nope'"):
        site_data_root(_context(**{"data-root": str(tmp_path / "nope")}), 1)


def _tree(deployment):
    """Every process the deployment started, with its descendants, right now."""
    tree = []
    for process in [deployment.superlink, *deployment.supernodes]:
        try:
            root = psutil.Process(process.pid)
            tree += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return tree


@pytest.mark.flower
def test_loopback_deployment_with_tls_and_node_auth_completes(tmp_path):
    started = time.monotonic()
    with Deployment() as deployment:
        deployment.start_superlink(num_keys=2)
        node_configs = [{"partition-id": 0, "num-partitions": 2}, {"site-id": 1}]
        for key, node_config in enumerate(node_configs, start=1):
            deployment.register(key)
            deployment.start_supernode(key, node_config)
        outcome = deployment.run(
            ROOT,
            {**TINY, "results-dir": str(tmp_path), "run-name": "loopback"},
            timeout_s=600,
        )
        ours = _tree(deployment)
    print(f"loopback deployment: {time.monotonic() - started:.1f} s")
    assert outcome.status == "finished:completed", outcome.details + outcome.log[-3000:]
    metrics = json.loads((tmp_path / "loopback" / "metrics.json").read_text())
    assert metrics["complete"] is True
    assert len(metrics["accuracy_matrix"]) == 2
    assert len(ours) >= 3  # SuperLink + 2 SuperNodes (+ their SuperExecs)
    assert [p.pid for p in ours if p.is_running()] == []  # all stopped


@pytest.mark.flower
def test_supernode_with_unregistered_key_is_refused():
    with Deployment() as deployment:
        deployment.start_superlink(num_keys=2)
        deployment.register(1)  # node-2's key is never registered
        node = deployment.start_supernode(2, {"partition-id": 0}, max_wait_s=15)
        code = node.wait(timeout=90)
        log = deployment.node_logs[0].read_text()
        ours = _tree(deployment)
    assert code != 0
    assert "Failed to activate SuperNode" in log, log[-2000:]
    assert [p.pid for p in ours if p.is_running()] == []


def test_discovery_leaves_out_a_failing_site_and_logs_it():
    import logging

    from fake_grid import FakeGrid
    from flwr.app import ConfigRecord, Error, Message, RecordDict

    from fcit_flower.protocol import CONFIG_KEY
    from fcit_flower.server_app import discover_clients

    def handler(node_id, message):
        if node_id == 22:
            reason = "ValueError: site 5 (node-config site-id) is not in the schedule"
            return Message(Error(code=0, reason=reason), reply_to=message)
        record = ConfigRecord({"partition-id": 0})
        return Message(RecordDict({CONFIG_KEY: record}), reply_to=message)

    records = []
    handler_ = logging.Handler()
    handler_.emit = records.append
    logger = logging.getLogger("flwr")
    logger.addHandler(handler_)
    try:
        mapping = discover_clients(FakeGrid([11, 22], handler), expected=2, timeout=5)
    finally:
        logger.removeHandler(handler_)
    assert mapping == {11: 0}
    messages = [r.getMessage() for r in records]
    assert any("node 22 left out" in m and "site 5" in m for m in messages), messages


def test_site_compose_file_runs_one_site_and_nothing_of_the_coordinator():
    text = (ROOT / "docker" / "compose.site.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert set(services) == {"supernode", "clientapp", "worker", "base"}
    node = services["supernode"]["command"]
    assert "--auth-supernode-private-key=/keys/site-key" in node
    assert "--root-certificates=/certs/ca.crt" in node
    assert not any("--insecure" in a for a in node)
    assert any(a.startswith("--node-config=site-id=${SITE_ID:?") for a in node)
    # the ClientApp forwards to the worker through the socket both containers mount
    assert any('site-worker="/run/fcit/site.sock"' in a for a in node)
    worker = services["worker"]["entrypoint"]
    assert worker[:3] == ["python", "-m", "fcit_flower.site_worker"]
    for name in ("clientapp", "worker"):
        assert "fcit-worker:/run/fcit" in services[name]["volumes"]
    assert "ports" not in services["supernode"]  # no inbound port at a site
    for name in ("SUPERLINK", "SITE_ID", "SITE_KEY", "CA_CERT", "SITE_DATA"):
        assert "${" + name + ":?" in text, name  # compose refuses to start without
    mounts = services["clientapp"]["volumes"]
    assert any(m.endswith(":/data:ro") for m in mounts)
    assert services["base"]["entrypoint"] == ["fcit-flower", "base"]
    compose_cli = _compose_cli()
    if compose_cli:  # where the tool exists, compose itself must accept the file
        env = {
            "SUPERLINK": "c:9093",
            "SITE_ID": "0",
            "SITE_KEY": "/k",
            "CA_CERT": "/c",
            "SITE_DATA": "/d",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
        }
        site = [*compose_cli, "-f", "docker/compose.site.yaml", "config", "-q"]
        subprocess.run(site, cwd=ROOT, env=env, check=True)
        del env["SITE_DATA"]
        refused = subprocess.run(site, cwd=ROOT, env=env, capture_output=True)
        assert refused.returncode != 0 and b"SITE_DATA" in refused.stderr
        coordinator = [*compose_cli, "-f", "docker/compose.yaml", "config", "-q"]
        subprocess.run(coordinator, cwd=ROOT, check=True)


def _compose_cli():
    """``docker compose`` (plugin) or ``docker-compose``, if either works here."""
    for cli in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cli[0]):
            probe = subprocess.run([*cli, "version"], capture_output=True)
            if probe.returncode == 0:
                return cli
    return None
