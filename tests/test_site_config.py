"""Site-local settings: a site's node-config replaces the coordinator's paths,
device and precision; a site with its own data needs only its train files."""

import json
import shutil
from types import SimpleNamespace

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from site_data import site_directories

from fcit_flower.client_app import app as client_app
from fcit_flower.client_handlers import site_context
from fcit_flower.config import RunConfig
from fcit_flower.inprocess import InProcessGrid, run_inprocess
from fcit_flower.protocol import (
    CONFIG_KEY,
    DATA_FINGERPRINT,
    DESCRIBE,
    KIND,
    PARTITION_ID,
    SITE_SETTINGS,
)
from fcit_flower.report.manifest import combined_digest, file_sha256
from fcit_flower.site_config import (
    SITE_LOCAL_KEYS,
    hardware_differences,
    site_run_config,
    site_values,
)
from fcit_flower.tasks.schedule import make_schedule

SMALL = {
    "num-clients": 2,
    "clients-per-round": 2,
    "rounds-per-stage": 1,
    "num-stages": 2,
    "train-size": 16,
    "test-size": 4,
    "min-client-size": 2,
}


def _context(run_config, **node):
    return SimpleNamespace(run_config=run_config, node_config=node)


def test_node_config_replaces_only_site_local_keys():
    run = {"lr": 0.01, "data-root": "/coordinator/data", "device": "cuda"}
    node = {"site-id": 1, "data-root": "/site/data", "device": "cpu", "lr": 0.5}
    values = site_values(run, node)
    assert values == {"lr": 0.01, "data-root": "/site/data", "device": "cpu"}
    assert "lr" not in SITE_LOCAL_KEYS and "site-id" not in values


def test_a_coordinator_path_missing_at_a_site_is_one_line_naming_the_key(tmp_path):
    run = {"data-root": str(tmp_path / "coordinator-only")}
    with pytest.raises(ValueError) as info:
        site_run_config(run, {"site-id": 3}, 3)
    message = str(info.value)
    assert message.startswith("site 3: data-root=")
    assert "give this site's own with node-config data-root" in message
    assert "\n" not in message
    # the site's own path replaces it: the coordinator's is never looked at
    config = site_run_config(run, {"data-root": str(tmp_path)}, 3)
    assert config.data_root == str(tmp_path)
    with pytest.raises(ValueError, match=r"^site 0: device='tpu'"):
        site_run_config({}, {"device": "tpu"}, 0)


def test_sites_train_on_their_own_data_and_report_it(tmp_path):
    coordinator, sites = site_directories(tmp_path, SMALL)
    gone = str(tmp_path / "only-at-the-coordinator")
    run = {**SMALL, "data-root": str(coordinator)}
    # A site whose run config names a path it lacks, with its own in node-config:
    config, position = site_context(
        _context(
            {**run, "data-root": gone}, **{"site-id": 1, "data-root": str(sites[1])}
        )
    )
    assert (config.data_root, position) == (str(sites[1]), 1)
    nodes = [{"site-id": k, "data-root": str(sites[k])} for k in (0, 1)]
    run_inprocess({**run, "results-dir": str(tmp_path), "run-name": "own"}, nodes)
    metrics = json.loads((tmp_path / "own" / "metrics.json").read_text())
    assert metrics["complete"] and len(metrics["accuracy_matrix"]) == 2
    reports = json.loads((tmp_path / "own" / "sites.json").read_text())
    manifest = json.loads((tmp_path / "own" / "manifest.json").read_text())
    assert manifest["sites"] == reports and "versions" in manifest
    by_site = {r[PARTITION_ID]: r for r in reports.values()}
    for site in (0, 1):  # Hom: every site learns every task of the run
        files = {t: sites[site] / t / "train.json" for t in metrics["tasks"]}
        digests = {t: file_sha256(path) for t, path in files.items()}
        assert by_site[site][DATA_FINGERPRINT] == combined_digest(digests)
        assert by_site[site][SITE_SETTINGS] == f"data-root={sites[site]}"
        assert by_site[site]["admitted"] is True


def test_a_site_without_a_train_file_fails_at_discovery_naming_itself(tmp_path):
    _, sites = site_directories(tmp_path, SMALL)
    task = make_schedule(RunConfig.from_mapping(SMALL)).tasks[-1]  # stage 2's
    shutil.rmtree(sites[0] / task)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    grid = InProcessGrid(
        client_app,
        2,
        {**SMALL, "num-stages": 0},  # every stage: every task is some site's
        [{"site-id": 0, "data-root": str(sites[0])}, {"site-id": 1}],
    )
    query = Message(
        content=RecordDict({CONFIG_KEY: ConfigRecord({KIND: DESCRIBE})}),
        dst_node_id=1,
        message_type="query",
    )
    (reply,) = grid.send_and_receive([query])
    assert reply.has_error()
    reason = reply.error.reason.strip().splitlines()[-1]
    assert "site 0:" in reason and "lacks train files" in reason and task in reason


def test_hardware_differences_name_each_key_a_site_set_otherwise():
    run = RunConfig()  # cpu, no quantization, float32
    assert hardware_differences('device=cpu data-root="/d"', run) == []
    found = hardware_differences("quantization=4bit torch-dtype=bfloat16", run)
    assert found == [
        "quantization=4bit (the run's: none)",
        "torch-dtype=bfloat16 (the run's: float32)",
    ]


def test_a_site_cannot_follow_its_own_schedule():
    run = {"schedule-file": "/coordinator/schedule.toml"}
    values = site_values(run, {"schedule-file": "/site/other.toml"})
    assert values["schedule-file"] == "/coordinator/schedule.toml"


def test_the_compared_fingerprint_covers_a_clip_encoder(tmp_path):
    from fcit_flower.report.manifest import model_fingerprint, weights_fingerprint

    base, encoder, other = (tmp_path / n for n in ("base", "clip", "other"))
    for folder, payload in ((base, b"b"), (encoder, b"c"), (other, b"d")):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(payload)
    assert model_fingerprint(base) == weights_fingerprint(base)
    with_clip = model_fingerprint(base, str(encoder))
    assert with_clip.startswith(weights_fingerprint(base) + "+clip:")
    assert with_clip != model_fingerprint(base, str(other))
