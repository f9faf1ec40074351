"""Site identity bound to the node: allow-list, impostors, duplicate claims."""

import logging

import pytest
from fake_grid import FakeGrid
from flwr.app import ConfigRecord, Message, RecordDict

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.protocol import CONFIG_KEY
from fcit_flower.server_app import discover_clients
from fcit_flower.site_admission import admit_sites, parse_site_nodes


def test_parse_site_nodes():
    assert parse_site_nodes("") == {}
    assert parse_site_nodes("0=1234, 1=5678") == {0: 1234, 1: 5678}
    for bad, words in [
        ("0:1234", "not site=node-id"),
        ("0=-4", "not site=node-id"),
        ("0=1,0=2", "given twice"),
        ("0=1,1=1", "given twice"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_site_nodes(bad)


def test_bad_site_nodes_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="site-nodes item 'x'"):
        RunConfig(site_nodes="x").validate()
    with pytest.raises(ConfigError, match="outside 0..num-clients-1=9"):
        RunConfig(site_nodes="10=5").validate()
    RunConfig(site_nodes="0=5,9=6").validate()


def test_allow_list_admits_only_the_bound_node_for_its_site():
    claims = {11: 0, 22: 1, 33: 0, 44: 1}  # 33 impersonates site 0, 44 is unknown
    admitted, refused = admit_sites(claims, {0: 11, 1: 22, 2: 33})
    assert admitted == {11: 0, 22: 1}
    assert refused == [
        "node 33 claims site 0 but site-nodes binds it to site 2",
        "node 44 (claims site 1) is not in site-nodes",
    ]


def test_without_allow_list_a_doubly_claimed_site_gets_no_node():
    admitted, refused = admit_sites({11: 0, 22: 1, 33: 0}, {})
    assert admitted == {22: 1}
    assert len(refused) == 2 and all("claims site 0" in r for r in refused)
    assert "site-nodes" in refused[0]


def test_discovery_refuses_an_impostor_and_names_it(caplog):
    sites = {11: 0, 22: 1, 99: 0}  # node 99: a rogue host claiming site 0

    def handler(node_id, message):
        record = ConfigRecord({"partition-id": sites[node_id]})
        return Message(RecordDict({CONFIG_KEY: record}), reply_to=message)

    grid = FakeGrid([11, 22, 99], handler)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        mapping = discover_clients(grid, expected=2, timeout=5, site_nodes="0=11,1=22")
    assert mapping == {11: 0, 22: 1}
    assert any(
        "refused: node 99 (claims site 0) is not in site-nodes" in r.message
        for r in caplog.records
    )


def test_a_site_with_another_base_or_none_is_refused():
    from fcit_flower.site_admission import same_base

    claims = {11: 0, 22: 1, 33: 2}
    kept, refused = same_base(claims, {11: "ab" * 32, 22: "cd" * 32}, "ab" * 32)
    assert kept == {11: 0}
    assert "node 22 (site 1) has another base" in refused[0]
    assert "node 33 (site 2) has no base built: run `fcit-flower base`" in refused[1]


def test_discovery_records_what_each_site_reported(caplog):
    reports_of = {
        11: {"partition-id": 0, "base-fingerprint": "f" * 64, "versions": "flwr=1"},
        22: {"partition-id": 1, "base-fingerprint": "e" * 64, "versions": "flwr=1"},
    }

    def handler(node_id, message):
        record = ConfigRecord(reports_of[node_id])
        return Message(RecordDict({CONFIG_KEY: record}), reply_to=message)

    reports = {}
    with caplog.at_level(logging.WARNING, logger="flwr"):
        mapping = discover_clients(
            FakeGrid([11, 22], handler), 2, timeout=5, base="f" * 64, reports=reports
        )
    assert mapping == {11: 0}
    assert reports[11]["admitted"] is True and reports[22]["admitted"] is False
    assert reports[22]["base-fingerprint"] == "e" * 64
    assert any("node 22 (site 1) has another base" in r.message for r in caplog.records)


def test_a_client_reports_the_base_it_has_built(tmp_path, monkeypatch):
    from fcit_flower.client_handlers import site_report
    from fcit_flower.report.manifest import (
        combined_digest,
        file_sha256,
        weights_fingerprint,
    )
    from fcit_flower.runtime import base_model_path

    config = RunConfig()
    built = base_model_path(config)  # the tests' (smoke) base, built once
    own = tmp_path / "site"
    (own / "iconqa").mkdir(parents=True)
    (own / "iconqa" / "train.json").write_text("[]")
    report = site_report(config, 3, own, ["iconqa", "figureqa"])
    assert report["partition-id"] == 3
    assert report["base-fingerprint"] == weights_fingerprint(built)
    assert "flwr=" in report["versions"] and "torch=" in report["versions"]
    # the train files the site has (figureqa's is missing: not in the digest)
    train = {"iconqa": file_sha256(own / "iconqa" / "train.json")}
    assert report["data-fingerprint"] == combined_digest(train)
    from fcit_flower.models import tiny

    monkeypatch.setattr(tiny, "default_cache_dir", lambda: tmp_path)  # no base here
    assert site_report(config, 3, own, [])["base-fingerprint"] == ""
