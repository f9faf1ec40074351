"""Unit tests of the Flower runner's pure parts (no SuperLink, no Ray)."""

import math
import os
import subprocess
import sys
import time

import psutil
import pytest
from flwr.common.config import parse_config_args

from fcit_flower.launch import simulation
from fcit_flower.launch.process import FlowerRunError, stop_process_tree
from fcit_flower.launch.runs import format_override_value, format_overrides
from fcit_flower.launch.simulation import federation_config

TRICKY = {
    "method": "disco",
    "empty": "",
    "spaced": "a b  c",
    "quotes": 'he said "hi" and it\'s fine',
    "backslash": r"C:\data\new",
    "newline": "one\ntwo\ttab",
    "equals": "x=y z=w",
    "unicode": "café – 😀",
    "path": "/tmp/results dir/run-1",
    "lr": 0.003,
    "tiny": 1e-05,
    "big": 1e16,
    "whole-float": 1.0,
    "negative": -2.5,
    "rounds": 3,
    "zero": 0,
    "train-projector": False,
    "flag": True,
}


def test_values_render_as_toml_literals():
    assert format_override_value(True) == "true"
    assert format_override_value(False) == "false"
    assert format_override_value(3) == "3"
    assert format_override_value(1.0) == "1.0"
    assert format_override_value(0.003) == "0.003"
    assert format_override_value("disco") == '"disco"'
    assert format_override_value('a"b') == '"a\\u0022b"'
    assert format_override_value("a\\b") == '"a\\\\b"'
    assert format_overrides({"lr": 0.5, "method": "x"}) == 'lr=0.5 method="x"'
    assert format_overrides({}) == ""


def test_overrides_round_trip_through_flowers_own_parser():
    parsed = parse_config_args([format_overrides(TRICKY)])
    assert parsed == TRICKY
    for key, value in TRICKY.items():  # types survive too (1.0 stays a float)
        assert type(parsed[key]) is type(value), key


def test_special_floats_round_trip():
    parsed = parse_config_args(
        [format_overrides({"a": math.inf, "b": -math.inf, "c": math.nan})]
    )
    assert parsed["a"] == math.inf and parsed["b"] == -math.inf
    assert math.isnan(parsed["c"])


@pytest.mark.parametrize("key", ["", "has space", "a=b", 'q"uote'])
def test_bad_keys_are_rejected(key):
    with pytest.raises(ValueError):
        format_overrides({key: 1})


@pytest.mark.parametrize("value", [None, [1, 2], {"a": 1}, b"bytes"])
def test_bad_values_are_rejected(value):
    with pytest.raises(TypeError):
        format_override_value(value)


def test_federation_config():
    assert federation_config(3, 1.0, 0.0) == (
        "num-supernodes=3 client-resources-num-cpus=1 client-resources-num-gpus=0.0"
    )
    assert federation_config(2, 2, 0.25).endswith("client-resources-num-gpus=0.25")
    for bad in [(0, 1, 0), (2, 0.5, 0), (2, 0, 0), (2, 1, -1)]:
        with pytest.raises(ValueError):
            federation_config(*bad)


def test_superlink_that_cannot_start_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(simulation, "flwr_bin", lambda name: "false")
    with pytest.raises(FlowerRunError, match="could not start"):
        simulation.run_simulation_app(tmp_path, {}, num_supernodes=2)


def test_stop_process_tree_reaches_detached_grandchildren():
    # a leader whose child starts its own session, like SuperLink -> SuperExec
    script = (
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)\n"
    )
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        children = psutil.Process(leader.pid).children(recursive=True)
        if len(children) == 2:
            break
        time.sleep(0.1)
    assert len(children) == 2
    assert {os.getsid(c.pid) for c in children} != {leader.pid}
    stop_process_tree(leader, grace_s=2.0)
    assert leader.poll() is not None
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
