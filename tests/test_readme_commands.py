"""README's runnable command blocks run as written, so the README cannot drift.

A block is runnable when the line before its ```bash fence is ``<!-- runnable -->``
(a fast subset: help texts, checks; nothing that trains). ``fcit-flower`` and
``python`` are this interpreter's, as in the activated venv.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = re.compile(r"^<!-- runnable -->\n```bash\n(.*?)^```$", re.M | re.S)


def runnable_blocks(text: str) -> list[str]:
    """The shell blocks of ``text`` marked runnable."""
    return RUNNABLE.findall(text)


def test_marked_blocks_are_found_and_unmarked_ones_are_not():
    text = (
        "<!-- runnable -->\n```bash\necho a\n```\n\n"
        "```bash\nmake demo\n```\n"
        "<!-- runnable -->\n\n```bash\necho c\n```\n"  # not right before the fence
    )
    assert runnable_blocks(text) == ["echo a\n"]
    assert len(runnable_blocks((ROOT / "README.md").read_text())) >= 1


@pytest.fixture(scope="module")
def venv_like_path(tmp_path_factory):
    """A PATH where fcit-flower and python are this interpreter with this checkout."""
    bin_dir = tmp_path_factory.mktemp("bin")
    commands = {
        "fcit-flower": f'exec "{sys.executable}" -m fcit_flower.cli "$@"',
        "python": f'exec "{sys.executable}" "$@"',
    }
    for name, line in commands.items():
        script = bin_dir / name
        script.write_text(f"#!/usr/bin/env bash\n{line}\n")
        script.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.mark.parametrize(
    "block", runnable_blocks((ROOT / "README.md").read_text()), ids=lambda b: b[:40]
)
def test_readme_block_runs(block, venv_like_path):
    env = {
        **os.environ,
        "PATH": venv_like_path,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{block}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
