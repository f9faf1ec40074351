"""Files and cache directories follow the umask (tempfile alone makes them private)."""

import os
import stat
import tempfile
from pathlib import Path

import pytest

from fcit_flower.filemode import current_umask, follow_umask
from fcit_flower.results import atomic_write_json


@pytest.fixture
def umask():
    """Set the process umask for one test; restore it afterwards."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_without_changing_it(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027


@pytest.mark.parametrize(("mask", "file_mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_results_files_follow_the_umask(tmp_path, umask, mask, file_mode):
    umask(mask)
    atomic_write_json(tmp_path / "metrics.json", {"last": 1.0})
    assert _mode(tmp_path / "metrics.json") == file_mode
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp left


def test_a_tempfile_directory_follows_the_umask(tmp_path, umask):
    umask(0o022)
    staging = Path(tempfile.mkdtemp(dir=tmp_path))
    assert _mode(staging) == 0o700
    follow_umask(staging)
    assert _mode(staging) == 0o755


def test_the_mini_fcit_cache_follows_the_umask_and_says_it_is_built(
    tmp_path, umask, caplog
):
    from fcit_flower.tasks.mini_fcit import build_mini_fcit

    umask(0o022)
    with caplog.at_level("INFO", logger="fcit_flower.tasks.mini_fcit"):
        root = build_mini_fcit(
            tmp_path / "mini",
            train_size=2,
            val_size=1,
            test_size=1,
            exclude_pretraining=False,
        )
    assert caplog.messages == [f"building mini-FCIT (once, cached in {root})"]
    assert _mode(root) == 0o755
    assert _mode(root / "stats.json") == 0o644


def test_the_base_cache_follows_the_umask_and_says_it_is_built(
    tmp_path, umask, caplog, monkeypatch
):
    from fcit_flower.models import base_build, tiny, tiny_spec

    def build_base_files(spec, folder):  # stands in for the long pre-training
        (folder / "config.json").write_text("{}")
        (folder / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(base_build, "build_base_files", build_base_files)
    umask(0o022)
    with caplog.at_level("INFO", logger=tiny.log.name):
        base = tiny.ensure_tiny_base(tiny_spec.TINY_BASES["smoke"], cache_dir=tmp_path)
    assert caplog.messages == [f"pre-training the base (once, cached in {base})"]
    assert _mode(base) == 0o755 and _mode(base / "tokenizer.json") == 0o644
