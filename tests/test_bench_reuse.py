"""A benchmark reuses a finished run only if it trained the same tiny base."""

import json

import pytest

from bench import common
from fcit_flower.config import RunConfig
from fcit_flower.models import tiny
from fcit_flower.report.manifest import base_weights


@pytest.fixture
def base_dir(tmp_path, monkeypatch):
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"this machine's weights")
    monkeypatch.setattr(tiny, "built_tiny_base", lambda: folder)
    common._this_base_digests.cache_clear()
    yield folder
    common._this_base_digests.cache_clear()


def _run_with_base(tmp_path, base):
    run = tmp_path / "finetune-s0"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"base": base}))
    return run


def test_a_run_of_this_base_is_reused(tmp_path, base_dir):
    run = _run_with_base(tmp_path, base_weights(base_dir))
    common._check_same_base(run, RunConfig())


def test_a_run_of_another_base_stops_with_one_line(tmp_path, base_dir):
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"another machine's weights")
    run = _run_with_base(tmp_path, base_weights(other))
    with pytest.raises(SystemExit) as stop:
        common._check_same_base(run, RunConfig())
    message = str(stop.value)
    assert "manifest.json" in message and "base.weights_sha256" in message
    assert "\n" not in message


def test_a_run_without_a_recorded_base_is_reused(tmp_path, base_dir):
    common._check_same_base(_run_with_base(tmp_path, None), RunConfig())
