"""Bad inputs through the real CLI: each must end in one error line before launch.

Every case runs ``fcit-flower`` as a user would (a subprocess, a fresh results
directory) and records: the exit code, whether the last line of stderr is one
``fcit-flower: error:`` line, whether any traceback was printed, whether a Flower
run was started (the CLI prints ``run 1/N`` when it launches one) and the seconds
until the command returned.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import record_rows, table_header


def _fcit_dir(root: Path) -> Path:
    """An FCIT-layout copy of mini-FCIT's imagenet-r with one corrupt train image."""
    from fcit_flower.config import RunConfig
    from fcit_flower.tasks.data import data_root

    source = data_root(RunConfig())
    data = root / "fcit"
    folder = data / "ImageNet-R"
    folder.mkdir(parents=True)
    shutil.copytree(source / "images" / "imagenet-r", data / "images" / "imagenet-r")
    train = json.loads((source / "imagenet-r" / "train.json").read_text())
    for record in train[:40]:  # 10 % of the records point at a corrupt file
        (data / record["image"]).write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    (folder / "train.json").write_text(json.dumps(train))
    shutil.copy(source / "imagenet-r" / "test.json", folder / "test.json")
    return data


def cases(root: Path) -> list[tuple[str, list[str]]]:
    """(label, fcit-flower arguments) of every bad input tried."""
    results = str(root / "results")
    blocker = root / "a-file"
    blocker.write_text("")
    broken = root / "broken"
    (broken / "run").mkdir(parents=True)
    (broken / "run" / "metrics.json").write_bytes(b"\xff\xfe{")
    empty = root / "empty"
    (empty / "run").mkdir(parents=True)
    (empty / "run" / "metrics.json").write_text("{}")
    data = _fcit_dir(root)
    compare = ["compare", "--results-dir", results]
    return [
        ("--beta abc", [*compare, "--beta", "abc"]),
        ("--beta inf", [*compare, "--beta", "inf"]),
        ("--seeds abc", [*compare, "--seeds", "abc"]),
        ("--seeds=-1", [*compare, "--seeds=-1"]),
        ('--methods ""', [*compare, "--methods", ""]),
        ("--methods finetune,finetune", [*compare, "--methods", "finetune,finetune"]),
        ("max-update-norm=nan", [*compare, "--run-config", "max-update-norm=nan"]),
        ("max-token-norm=inf", [*compare, "--run-config", "max-token-norm=inf"]),
        ("lr=-1", [*compare, "--run-config", "lr=-1"]),
        ("unknown key", [*compare, "--run-config", "no-such-key=1"]),
        ("key set by a flag", [*compare, "--run-config", "method='disco'"]),
        ("too few samples", [*compare, "--run-config", "num-clients=200"]),
        ("results dir under a file", ["compare", "--results-dir", str(blocker / "x")]),
        (
            "10% corrupt train images",
            [
                *compare,
                "--run-config",
                f"data-root='{data}' num-stages=1 max-bad-fraction=0.05",
            ],
        ),
        ("report: non-UTF-8 metrics.json", ["report", str(broken)]),
        ("report: metrics.json is {}", ["report", str(empty)]),
        ("resume: no checkpoint", ["resume", str(empty / "run")]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    executable = str(Path(sys.executable).parent / "fcit-flower")
    rows = table_header(
        "input", "exit", "one error line", "traceback", "Flower started", "seconds"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for label, argv in cases(Path(tmp)):
            start = time.monotonic()
            done = subprocess.run(
                [executable, *argv],
                capture_output=True,
                text=True,
                env={**os.environ, "FCIT_TRACEBACK": ""},
                timeout=600,
            )
            seconds = time.monotonic() - start
            lines = done.stderr.strip().splitlines()
            one_line = bool(lines) and lines[-1].startswith("fcit-flower: error:")
            traceback = "Traceback" in done.stderr + done.stdout
            started = "run 1/" in done.stdout + done.stderr
            rows.append(
                f"| {label} | {done.returncode} | {'yes' if one_line else 'NO'} | "
                f"{'YES' if traceback else 'no'} | {'YES' if started else 'no'} | "
                f"{seconds:.1f} |"
            )
            print(rows[-1], flush=True)
    record_rows("Bad inputs through the CLI", rows, enabled=not args.no_record)


if __name__ == "__main__":
    main()
