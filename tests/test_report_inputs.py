"""``fcit-flower report`` on damaged results: one error line, the rest reported."""

import json

import pytest

from fcit_flower.cli import main as cli_main
from fcit_flower.report.comparison import write_reports
from fcit_flower.report.document import ReportError

GOOD = {
    "tasks": ["imagenet-r", "arxivqa"],
    "accuracy_matrix": [[80.0, 5.0], [40.0, 90.0]],
    "complete": True,
    "last": 65.0,
    "avg": 70.0,
    "bwt": -40.0,
    "method": "finetune",
}


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


DAMAGED = {
    "empty object": (b"{}", "field 'tasks' is not a list of task names"),
    "a list": (b"[1, 2]", "holds a JSON list, not an object"),
    "non-UTF-8": (b'{"tasks": "\xff"}', "not UTF-8 text"),
    "not JSON": (b"{oops", "not valid JSON"),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
    "ragged matrix": (
        json.dumps({**GOOD, "accuracy_matrix": [[1.0, 2.0], [3.0]]}).encode(),
        "'accuracy_matrix' row 2 is not a list of 2 scores",
    ),
    "text score": (
        json.dumps({**GOOD, "accuracy_matrix": [[1.0, "x"]]}).encode(),
        "'accuracy_matrix' row 1 holds a non-number",
    ),
    "no matrix": (
        json.dumps({"tasks": ["a"]}).encode(),
        "field 'accuracy_matrix' is not a list of rows",
    ),
}


def _last_error(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("fcit-flower: error: ")
    return last


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_metrics_json_is_one_error_line(tmp_path, capsys, case):
    content, fragment = DAMAGED[case]
    _write(tmp_path / "run/metrics.json", content)
    assert cli_main(["report", str(tmp_path / "run")]) == 2
    last = _last_error(capsys)
    assert fragment in last and "metrics.json" in last


def test_metrics_json_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "run/metrics.json").mkdir(parents=True)
    assert cli_main(["report", str(tmp_path / "run")]) == 2
    assert "metrics.json: a directory, not a JSON file" in _last_error(capsys)


def test_compare_csv_without_its_columns(tmp_path, capsys):
    _write(tmp_path / "combo/compare.csv", "a,b\n1,2\n")
    assert cli_main(["report", str(tmp_path / "combo")]) == 2
    last = _last_error(capsys)
    assert "compare.csv: lacks the column(s) ['method', 'last_mean'" in last


def test_compare_csv_with_a_non_number(tmp_path, capsys):
    header = (
        "method,last_mean,last_std,avg_mean,avg_std,bwt_mean,bwt_std,"
        "strict_last_mean,strict_last_std,headroom,seeds"
    )
    _write(tmp_path / "combo/compare.csv", f"{header}\nfinetune,abc,,,,,,,,,1\n")
    assert cli_main(["report", str(tmp_path / "combo")]) == 2
    assert "compare.csv: line 2 holds a non-number" in _last_error(capsys)


def test_a_tree_with_one_broken_run_reports_the_rest(tmp_path, capsys):
    _write(tmp_path / "a/good/metrics.json", json.dumps(GOOD))
    _write(tmp_path / "a/broken/metrics.json", b"[]")
    _write(tmp_path / "b/ragged/metrics.json", DAMAGED["ragged matrix"][0])
    assert cli_main(["report", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert (tmp_path / "a/good/report.md").exists()
    assert str(tmp_path / "a/good/report.md") in captured.out
    assert not (tmp_path / "a/broken/report.md").exists()
    assert f"skipped: {tmp_path / 'a/broken'}: " in captured.err
    assert f"skipped: {tmp_path / 'b/ragged'}: " in captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last == (
        "fcit-flower: error: 2 result directories could not be reported (named above)"
    )


def test_a_comparison_with_one_broken_run_reports_the_others(tmp_path):
    from fcit_flower.report.comparison import compare_table

    _, csv_text = compare_table({"finetune": {"last": [65.0], "avg": [70.0]}})
    _write(tmp_path / "combo/compare.csv", csv_text)
    _write(tmp_path / "combo/finetune-s0/metrics.json", json.dumps(GOOD))
    _write(tmp_path / "combo/finetune-s1/metrics.json", b"{}")
    broken: list[str] = []
    written = write_reports(tmp_path / "combo", broken=broken)
    assert written == [
        tmp_path / "combo/report.md",
        tmp_path / "combo/finetune-s0/report.md",
    ]
    assert broken == [
        f"{tmp_path / 'combo/finetune-s1'}: {tmp_path / 'combo/finetune-s1'}"
        "/metrics.json: field 'tasks' is not a list of task names"
    ]
    with pytest.raises(ReportError, match="finetune-s1/metrics.json"):
        write_reports(tmp_path / "combo")  # without a list: the first failure
