"""Plots, reports and manifests built from small synthetic results directories."""

import base64
import csv
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcit_flower.cli import APP_DIR
from fcit_flower.cli import main as cli_main
from fcit_flower.report import plots
from fcit_flower.report.comparison import (
    compare_table,
    write_compare_report,
    write_reports,
)
from fcit_flower.report.document import ReportError
from fcit_flower.report.manifest import (
    build_manifest,
    data_fingerprints,
    fill_git_commit,
    git_commit,
    manifest_differences,
)
from fcit_flower.report.run_report import write_run_report
from fcit_flower.similarity import cosine_matrix

TASKS = ["imagenet-r", "arxivqa", "figureqa"]
MATRIX = [[80.0, 5.0, 0.0], [40.0, 90.0, 10.0], [30.0, 60.0, 95.0]]
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)]+)\)")


def _manifest(method, seed, **config):
    return {
        "config": {"method": method, "seed": seed, "lr": 0.003, **config},
        "seeds": {"seed": seed, "data-seed": 0},
        "versions": {"flwr": "1.41.0", "python": "3.11"},
        "git_commit": "abc",
        "device": {"device": "cpu"},
        "data_root": "/data",
        "data_fingerprints": {t: {"train": "aa", "test": "bb"} for t in TASKS},
    }


def _run_dir(root, name, method="disco", seed=0, offset=0.0, manifest=None):
    run = root / name
    run.mkdir(parents=True)
    matrix = (np.asarray(MATRIX) - offset).tolist()
    metrics = {
        "tasks": TASKS,
        "accuracy_matrix": matrix,
        "complete": True,
        "learned_at_stage": [1, 2, 3],
        "last": float(np.mean(matrix[-1])),
        "avg": 60.0 - offset,
        "bwt": -30.0,
        "config": {"method": method, "seed": seed},
        "method": method,
        "stage_seconds": [1.0, 2.0, 3.0],
        "wall_seconds": 6.5,
        "rejected_uploads": [],
        "examples": {"arxivqa": [["Q?", "red", "red"]]},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "manifest.json").write_text(json.dumps(manifest or _manifest(method, seed)))
    if method == "disco":
        routing = {
            "assignments": [{"slot": 0, "tasks": "imagenet-r"}],
            "slot_majority_task": {"0": "imagenet-r", "1": "arxivqa", "2": "figureqa"},
            "routing_accuracy": 1.0,
            "tasks_split_over_slots": {},
            "mean_ssa_activation": {
                "imagenet-r": [0.9, 0.05, 0.05],
                "arxivqa": [0.1, 0.8, 0.1],
                "figureqa": [0.0, 0.2, 0.8],
            },
            "slot_tokens": [[1.0, 0.0, 0.2], [0.1, 1.0, 0.0], [0.0, 0.3, 1.0]],
        }
        (run / "routing.json").write_text(json.dumps(routing))
    return run


def _assert_real_plot(path, min_size=(250, 180)):
    image = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    height, width, _ = image.shape
    assert width >= min_size[0] and height >= min_size[1], (path, image.shape)
    # Not blank: many distinct colours, and a fair share of non-white pixels.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50, path
    assert (image.sum(axis=2) < 3 * 250).mean() > 0.02, path


def _assert_links_resolve(markdown_path):
    text = markdown_path.read_text()
    targets = IMAGE_LINK.findall(text) + LINK.findall(text)
    assert targets
    for target in targets:
        assert (markdown_path.parent / target).is_file(), target
    return text


def test_run_report_has_resolving_plots_and_sections(tmp_path):
    run = _run_dir(tmp_path, "disco-s0")
    report = write_run_report(run)
    text = _assert_links_resolve(report)
    images = IMAGE_LINK.findall(text)
    assert sorted(images) == [
        "plots/accuracy_matrix.png",
        "plots/forgetting.png",
        "plots/ssa_activation.png",
        "plots/token_similarity.png",
    ]
    for image in images:
        _assert_real_plot(run / image)
    for section in (
        "Score matrix",
        "Routing diagnostics",
        "Wall times",
        "Environment",
    ):
        assert f"## {section}" in text
    assert "| 3 | 30.00 | 60.00 | 95.00 |" in text
    page = (run / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 4 and 'src="plots/' not in page
    for data in embedded:  # each embedded image decodes to a PNG
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetune_report_has_no_disco_plots(tmp_path):
    run = _run_dir(tmp_path, "finetune-s0", method="finetune")
    text = write_run_report(run).read_text()
    assert "ssa_activation" not in text and "Routing" not in text
    assert not (run / "plots" / "ssa_activation.png").exists()


def test_heatmap_draws_the_data(tmp_path):
    low = plots.accuracy_heatmap(tmp_path / "a.png", TASKS, MATRIX, "t")
    high = plots.accuracy_heatmap(
        tmp_path / "b.png", TASKS, (100 - np.asarray(MATRIX)).tolist(), "t"
    )
    assert not np.array_equal(np.asarray(Image.open(low)), np.asarray(Image.open(high)))


def test_cosine_matrix_of_rows_with_itself():
    similarity = cosine_matrix([[1, 0], [0, 2], [3, 3], [0, 0]])
    assert np.allclose(np.diag(similarity)[:3], 1.0)
    assert similarity[0, 1] == pytest.approx(0.0)
    assert similarity[0, 2] == pytest.approx(np.sqrt(0.5))
    assert similarity[3, 0] == 0.0


def _compare_dir(tmp_path, disco_manifest=None):
    combo = tmp_path / "hom-task-b1"
    _run_dir(combo, "finetune-s0", method="finetune", offset=20.0)
    _run_dir(combo, "disco-s0", manifest=disco_manifest)
    with open(combo / "compare.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["method", "last_mean", "last_std", "avg_mean", "avg_std"]
            + ["bwt_mean", "bwt_std", "strict_last_mean", "strict_last_std"]
            + ["headroom", "seeds"]
        )
        writer.writerow(
            ["finetune", "41.67", "", "40.00", "", "-30", "", "40", "", "", 1]
        )
        writer.writerow(
            ["disco", "61.67", "2.00", "60.00", "1.00", "", "", "60", "1", "", 2]
        )
    return combo


def test_compare_report_links_runs_and_has_bars(tmp_path):
    combo = _compare_dir(tmp_path)
    report = write_compare_report(combo)
    text = _assert_links_resolve(report)
    assert "plots/compare.png" in text
    _assert_real_plot(combo / "plots" / "compare.png")
    assert "[report](disco-s0/report.md)" in text
    assert "| ServerApp s |" in text and "| 6.50 |" in text  # its own time, named
    assert '<a href="disco-s0/report.html">' in (combo / "report.html").read_text()
    assert "WARNING" not in text  # only method and seed differ


def test_compare_report_warns_on_config_and_data_differences(tmp_path):
    manifest = _manifest("disco", 0, lr=0.01)
    manifest["data_fingerprints"]["arxivqa"]["test"] = "cc"
    text = write_compare_report(_compare_dir(tmp_path, manifest)).read_text()
    assert "WARNING" in text
    assert "config 'lr'" in text and "task 'arxivqa'" in text


def test_manifest_differences_ignore_method_and_seed():
    same = {"a": _manifest("finetune", 0), "b": _manifest("disco", 1)}
    assert manifest_differences(same) == []
    other = {"a": _manifest("finetune", 0), "b": _manifest("disco", 0, tau=0.5)}
    assert manifest_differences(other) == ["config 'tau': a=None, b=0.5"]


def test_manifest_fingerprints_versions_and_commit(tmp_path):
    data = tmp_path / "data"
    (data / "imagenet-r").mkdir(parents=True)
    (data / "imagenet-r" / "train.json").write_text("[]")
    (data / "imagenet-r" / "test.json").write_text('[{"a": 1}]')
    prints = data_fingerprints(data, ["imagenet-r", "arxivqa"])
    assert prints["imagenet-r"]["train"] == hashlib.sha256(b"[]").hexdigest()
    assert prints["arxivqa"] == {"train": None, "test": None}
    manifest = build_manifest(
        {"seed": 3, "data-seed": 1}, data_root=data, tasks=["imagenet-r"], app_dir=data
    )
    assert manifest["seeds"] == {"seed": 3, "data-seed": 1}
    assert manifest["versions"]["numpy"] == np.__version__
    assert manifest["git_commit"] is None  # not a git checkout
    json.dumps(manifest)  # JSON-ready


def test_manifest_records_the_base_weights_and_warns_when_they_differ(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    (base / "config.json").write_text("{}")  # not a weight file
    manifest = build_manifest(
        {"seed": 0}, data_root=tmp_path, tasks=[], app_dir=tmp_path, base_path=base
    )
    assert manifest["base"] == {
        "path": str(base),
        "weight_bytes": {"model.safetensors": 7},
        "weights_sha256": {"model.safetensors": hashlib.sha256(b"weights").hexdigest()},
    }
    other = json.loads(json.dumps(manifest))
    other["base"]["weights_sha256"]["model.safetensors"] = "0" * 64
    warnings = manifest_differences({"a": manifest, "b": other})
    assert warnings == [
        "base model weights differ between a and b (sha256 of the weight files)"
    ]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_of_a_checkout(tmp_path):
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), *env, "commit", "-qm", "x"], check=True)
    commit = git_commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    (tmp_path / "f").write_text("2")
    assert git_commit(tmp_path) == f"{commit}-dirty"


def test_report_command(tmp_path, capsys):
    _compare_dir(tmp_path)
    assert cli_main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "hom-task-b1" / "report.md") in printed
    assert len(printed) == 3  # the comparison and its two runs


def test_report_command_rejects_a_directory_without_results(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("fcit-flower: error:") and "metrics.json" in error
    with pytest.raises(ReportError, match="not a directory"):
        write_reports(tmp_path / "missing")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_report_renders_in_headless_chromium(tmp_path):
    run = _run_dir(tmp_path, "disco-s0")
    write_run_report(run)
    page = run / "report.html"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu"]
    command += [f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*command, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<img") == 4 and "FCIT run disco-s0" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*command, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    _assert_real_plot(shot)


def test_partition_section_summarises_partitions_json():
    from fcit_flower.report.document import Report
    from fcit_flower.report.run_report import _partition_section

    report = Report(base=Path("."))
    partition = {
        "stages": [
            {
                "stage": 1,
                "size_gini": 0.29599999999999993,
                "clients": [{"samples": 3}, {"samples": 9}],
            }
        ]
    }
    _partition_section(report, partition)
    text = report.markdown()
    assert "| 1 | 2 | 3 | 9 | 6.0 | 0.30 |" in text


def test_run_report_names_each_tasks_metric_and_defines_its_figures(tmp_path):
    run = _run_dir(tmp_path, "finetune-s0", method="finetune")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["tasks"] = ["imagenet-r", "flickr30k", "my-own-set"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = write_run_report(run).read_text()
    header = (
        "| after stage | imagenet-r (accuracy %) | flickr30k (ROUGE-L) | my-own-set |"
    )
    assert header in text
    for figure in ("Last: ", "Avg: ", "BWT: "):
        assert f"- {figure}" in text
    assert "scaled-down stand-in" in text  # no data-root: mini-FCIT


def test_reports_on_a_users_data_carry_no_mini_fcit_note(tmp_path):
    manifest = _manifest("finetune", 0, **{"data-root": "/data/FCIT"})
    run = _run_dir(tmp_path, "finetune-s0", method="finetune", manifest=manifest)
    assert "stand-in" not in write_run_report(run).read_text()
    compare_dir = run.parent
    markdown, csv_text = compare_table({"finetune": {"last": [1.0], "avg": [2.0]}})
    (compare_dir / "compare.csv").write_text(csv_text)
    text = write_compare_report(compare_dir).read_text()
    assert "stand-in" not in text and "- Last: " in text
    assert "| finetune | 1.00 | 2.00 |" in text and "1.00 ±" not in text  # one seed


def test_fill_git_commit_only_when_missing(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"git_commit": None}))
    fill_git_commit(path, APP_DIR)
    filled = json.loads(path.read_text())["git_commit"]
    assert filled == git_commit(APP_DIR)
    path.write_text(json.dumps({"git_commit": "abc"}))
    fill_git_commit(path, APP_DIR)
    assert json.loads(path.read_text())["git_commit"] == "abc"


def test_compare_table_sample_std_headroom_and_undefined_bwt():
    rows = {
        "disco": {
            "last": [50.0, 52.0],
            "avg": [60.0, 60.0],
            "bwt": [0.0, -1.0],
            "strict_last": [40.0, 44.0],
        },
        "zeroshot": {"last": [4.0], "avg": [1.9], "bwt": [None], "strict_last": [1.0]},
        "mtl": {"last": [84.0], "avg": [84.0], "bwt": [None], "strict_last": [80.0]},
    }
    markdown, csv_text = compare_table(rows)
    # sample std (n - 1): std([50, 52]) = 1.41; headroom (51 - 4) / (84 - 4)
    row = "| disco | 51.00 ± 1.41 | 60.00 ± 0.00 | -0.50 ± 0.71 | 42.00 ± 2.83 |"
    assert row + " 0.59 | 2 |" in markdown
    assert "| zeroshot | 4.00 | 1.90 | n/a | 1.00 | 0.00 | 1 |" in markdown
    assert "| mtl | 84.00 | 84.00 | n/a | 80.00 | 1.00 | 1 |" in markdown
    assert csv_text.splitlines()[1] == (
        "disco,51.00,1.41,60.00,0.00,-0.50,0.71,42.00,2.83,0.588,2"
    )
    assert csv_text.splitlines()[2] == "zeroshot,4.00,,1.90,,,,1.00,,0.000,1"


def test_compare_table_without_references_has_no_headroom():
    markdown, _ = compare_table({"finetune": {"last": [10.0], "avg": [20.0]}})
    assert "| finetune | 10.00 | 20.00 | n/a | n/a | - | 1 |" in markdown
