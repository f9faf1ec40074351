"""Bad input to ``fcit-flower compare`` and ``resume``: one error line, before launch.

No test here trains or starts Flower: ``run_one`` and ``prepare_runtime`` are
replaced by stubs that fail the test if bad input ever reaches them.
"""

import json

import numpy as np
import pytest
from PIL import Image

import fcit_flower.cli as cli
import fcit_flower.runtime as runtime
from fcit_flower.checkpoint import CheckpointStore
from fcit_flower.config import RunConfig


def _no_launch(monkeypatch):
    def launched(*args, **kwargs):
        raise AssertionError("bad input reached the launch")

    monkeypatch.setattr(cli, "run_one", launched)
    monkeypatch.setattr(runtime, "prepare_runtime", launched)


def _fails(capsys, argv, code=2):
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("fcit-flower: error: ")
    return last


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--beta", "abc"], "--beta: 'abc' is not a number"),
        (["--beta", "inf"], "beta=inf must be a finite number"),
        (["--beta", "nan"], "beta=nan must be a finite number"),
        (["--seeds", "abc"], "--seeds: 'abc' is not an integer"),
        (["--seeds=-1"], "seed=-1 must be >= 0"),
        (["--seeds", "0,,1"], "--seeds='0,,1' has an empty item"),
        (["--methods", ""], "--methods is empty"),
        (["--methods", " , "], "--methods is empty"),
        (["--methods", "nosuch"], "--methods: method='nosuch' is not allowed"),
        (["--scenario", ""], "--scenario is empty"),
        (["--run-config", "method=disco"], "use --methods instead"),
        (["--run-config", "seed=3"], "use --seeds instead"),
        (["--run-config", "beta=0.5"], "use --beta instead"),
        (["--run-config", "scenario='het'"], "use --scenario instead"),
        (["--run-config", "setting='capability'"], "use --setting instead"),
        (["--run-config", "results-dir='x'"], "use --results-dir instead"),
        (["--run-config", "run-name='x'"], "'run-name', which compare sets"),
        (["--run-config", "resume=true"], "use --resume instead"),
        (["--run-config", "lr=1 lr=2"], "override key 'lr' is given twice"),
        (["--run-config", "max-update-norm=nan"], "max-update-norm=nan must be a fin"),
        (["--methods", "finetune,finetune"], "finetune-s0 is planned twice"),
        (["--seeds", "0,0"], "finetune-s0 is planned twice"),
        (["--beta", "1,1.0"], "is planned twice"),
        (["--run-config", "dp='on'"], "dp='on' is not allowed"),
        (["--run-config", "dp='central' dp-delta=0"], "dp-delta=0.0 must lie in"),
        (
            ["--methods", "ewc", "--run-config", "dp='central'"],
            "dp='central' is not supported by method='ewc'",
        ),
    ],
)
def test_bad_compare_flags_fail_in_one_line(
    monkeypatch, capsys, tmp_path, flags, fragment
):
    _no_launch(monkeypatch)
    argv = ["compare", "--methods", "finetune", "--results-dir", str(tmp_path), *flags]
    assert fragment in _fails(capsys, argv)


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "abc"])
def test_bad_timeout_is_refused_by_the_parser(capsys, value):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "--timeout", value])
    assert exit_.value.code == 2
    assert "argument --timeout" in capsys.readouterr().err


def test_results_dir_under_a_file_fails_before_launch(monkeypatch, capsys, tmp_path):
    _no_launch(monkeypatch)
    (tmp_path / "file").write_text("x")
    argv = [
        "compare",
        "--methods",
        "finetune",
        "--results-dir",
        str(tmp_path / "file/r"),
    ]
    last = _fails(capsys, argv)
    assert "is not a writable directory (Not a directory)" in last


def _image(path, spoil=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (9, 9, 9)).save(path)
    if spoil:
        path.write_bytes(path.read_bytes()[:40])


def _fcit_root(tmp_path, n=40, bad=()):
    """A one-task FCIT data root (ocr-vqa), ``bad`` train records with a broken PNG."""
    root = tmp_path / "data"
    _image(root / "img/ok.png")
    records = []
    for i in range(n):
        name = f"img/bad{i}.png" if i in bad else "img/ok.png"
        if i in bad:
            _image(root / name, spoil=True)
        turns = [{"from": "human", "value": "Title?"}, {"from": "gpt", "value": "x"}]
        records.append({"id": str(i), "image": name, "conversations": turns})
    (root / "ocr-vqa").mkdir()
    (root / "ocr-vqa/train.json").write_text(json.dumps(records))
    tests = [
        {"question_id": i, "image": "img/ok.png", "text": "Title?", "answer": "x"}
        for i in range(4)
    ]
    (root / "ocr-vqa/test.json").write_text(json.dumps(tests))
    schedule = tmp_path / "one.toml"
    schedule.write_text('[[stage]]\ntasks = ["ocr-vqa"]\n')
    return root, schedule


def _data_flags(root, schedule, tmp_path, extra=""):
    overrides = (
        f"data-root='{root}' schedule-file='{schedule}' num-clients=2 "
        f"clients-per-round=2 min-client-size=2 {extra}"
    )
    return [
        "compare",
        "--methods",
        "finetune",
        "--results-dir",
        str(tmp_path / "results"),
        "--run-config",
        overrides,
    ]


def test_corrupt_images_over_the_threshold_stop_before_launch(
    monkeypatch, capsys, tmp_path
):
    _no_launch(monkeypatch)
    root, schedule = _fcit_root(tmp_path, bad=(3, 9, 20))
    last = _fails(capsys, _data_flags(root, schedule, tmp_path))
    assert "ocr-vqa/train.json: record 3: field 'image'" in last
    assert "bad3.png cannot be decoded" in last and "3 of 40 records bad" in last


def test_a_few_corrupt_images_are_skipped_and_the_runs_go_on(
    monkeypatch, caplog, tmp_path
):
    ran = []

    def fake_run(config, **kwargs):
        ran.append(config)
        return {"last": 1.0, "avg": 2.0, "bwt": None, "complete": True}

    monkeypatch.setattr(cli, "run_one", fake_run)
    monkeypatch.setattr(runtime, "prepare_runtime", lambda config: None)
    root, schedule = _fcit_root(tmp_path, bad=(3,))
    assert cli.main(_data_flags(root, schedule, tmp_path)) == 0
    assert [c.method for c in ran] == ["finetune"]
    assert "skipped 1 bad records, first:" in caplog.text
    assert "bad3.png cannot be decoded" in caplog.text


def test_too_few_samples_for_the_clients_stop_before_launch(
    monkeypatch, capsys, tmp_path
):
    _no_launch(monkeypatch)
    root, schedule = _fcit_root(tmp_path, n=5)
    flags = _data_flags(root, schedule, tmp_path, extra="min-client-size=3")
    flags[-1] = flags[-1].replace("min-client-size=2 ", "")
    last = _fails(capsys, flags)
    assert "stage 1, client 0: 5 samples cannot give 2 clients at least 3" in last


def test_relative_data_root_reaches_the_run_absolute(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(cli, "run_one", lambda config, **kw: ran.append(config) or {})
    monkeypatch.setattr(runtime, "prepare_runtime", lambda config: None)
    root, schedule = _fcit_root(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(_data_flags("data", "one.toml", tmp_path)) == 0
    assert ran[0].data_root == str(root.resolve())
    assert ran[0].schedule_file == str(schedule.resolve())


def _run_with_checkpoint(tmp_path, *, end, complete):
    root, schedule = _fcit_root(tmp_path)
    config = RunConfig.from_mapping(
        {
            "data-root": str(root),
            "schedule-file": str(schedule),
            "num-clients": 2,
            "clients-per-round": 2,
            "min-client-size": 2,
            "results-dir": str(tmp_path / "results"),
            "run-name": "run",
        }
    )
    run_dir = config.run_dir
    progress = {"stage": 0, "rounds_done": 3, "stages_done": 1 if end else 0}
    meta = {"config": config.to_mapping(), "progress": progress, "strategy": {}}
    store = CheckpointStore(run_dir / "checkpoints")
    store.save({"w": np.ones(2)}, meta, stage=0, server_round=3, end=end)
    metrics = {
        "complete": complete,
        "accuracy_matrix": [[50.0]],
        "last": 50.0,
        "avg": 50.0,
        "bwt": None,
        "config": config.to_mapping(),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_resuming_a_finished_run_starts_nothing(monkeypatch, capsys, tmp_path):
    _no_launch(monkeypatch)
    run_dir = _run_with_checkpoint(tmp_path, end=True, complete=True)
    assert cli.main(["resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "already complete, nothing to resume: Last 50.00  Avg 50.00  BWT n/a" in out


def test_resume_accepts_operational_overrides_only(monkeypatch, capsys, tmp_path):
    _no_launch(monkeypatch)
    run_dir = _run_with_checkpoint(tmp_path, end=False, complete=False)
    for overrides, fragment in [
        ("lr=0.1", "resume cannot change 'lr' (it would alter the results)"),
        ("seed=4", "resume cannot change 'seed'"),
        ("fault-rate=0.5", "can only switch fault injection off"),
        ("max-round-retries=-2", "max-round-retries=-2 must be >= 0"),
    ]:
        argv = ["resume", str(run_dir), "--run-config", overrides]
        assert fragment in _fails(capsys, argv)
    ran = []
    monkeypatch.setattr(cli, "run_one", lambda config, **kw: ran.append(config) or {})
    argv = ["resume", str(run_dir), "--run-config", "max-round-retries=7 fault-rate=0"]
    assert cli.main(argv) == 0
    assert ran[0].resume and ran[0].max_round_retries == 7


@pytest.mark.parametrize("what", ["missing", "empty"])
def test_resume_without_checkpoint_says_so(monkeypatch, capsys, tmp_path, what):
    _no_launch(monkeypatch)
    run_dir = tmp_path / "run"
    if what == "empty":
        run_dir.mkdir()
        fragment = "no usable checkpoint in"
    else:
        fragment = "is not a run directory"
    assert fragment in _fails(capsys, ["resume", str(run_dir)])


def test_resume_hint_says_whether_a_checkpoint_exists(tmp_path):
    config = RunConfig.from_mapping({"results-dir": str(tmp_path), "run-name": "r"})
    assert "wrote no checkpoint, so it must be started again" in cli.resume_hint(config)
    CheckpointStore(config.run_dir / "checkpoints").save(
        {"w": np.ones(1)}, {}, stage=0, server_round=1, end=False
    )
    assert "fcit-flower resume" in cli.resume_hint(config)


def test_an_unexpected_error_is_one_line_too(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "report", broken)
    monkeypatch.delenv("FCIT_TRACEBACK", raising=False)
    last = _fails(capsys, ["report", "."], code=1)
    assert "unexpected ZeroDivisionError: boom" in last


def test_a_guard_switched_off_is_warned_before_launch(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "run_one", lambda config, **kw: {})
    monkeypatch.setattr(runtime, "prepare_runtime", lambda config: None)
    root, schedule = _fcit_root(tmp_path)
    flags = _data_flags(root, schedule, tmp_path, extra="max-update-norm=0")
    assert cli.main(flags) == 0
    err = capsys.readouterr().err
    assert "fcit-flower: warning: max-update-norm=0: this upload guard is OFF" in err
    assert "max-token-norm=0" not in err


def test_a_finished_run_on_other_data_is_not_reused(tmp_path):
    from fcit_flower.launch.recovery import finished_metrics
    from fcit_flower.tasks.data import data_root_path

    run_dir = _run_with_checkpoint(tmp_path, end=True, complete=True)
    config = RunConfig.from_mapping(
        json.loads((run_dir / "metrics.json").read_text())["config"]
    )
    assert finished_metrics(config) is not None  # no manifest: config decides
    for used, reused in [(str(data_root_path(config)), True), ("/old/v2.1", False)]:
        (run_dir / "manifest.json").write_text(json.dumps({"data_root": used}))
        assert (finished_metrics(config) is not None) is reused, used


def test_a_finished_run_older_than_a_key_is_reused_when_it_ran_its_default(tmp_path):
    from fcit_flower.launch.recovery import finished_metrics

    run_dir = _run_with_checkpoint(tmp_path, end=True, complete=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = RunConfig.from_mapping(metrics["config"])
    del metrics["config"]["transport-dtype"]  # written before the key existed
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert finished_metrics(config) is not None
    assert finished_metrics(config.replace(transport_dtype="bfloat16")) is None


def test_a_finished_run_is_reused_whatever_another_method_s_keys_say(tmp_path):
    from fcit_flower.launch.recovery import finished_metrics

    run_dir = _run_with_checkpoint(tmp_path, end=True, complete=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = RunConfig.from_mapping(metrics["config"])
    assert config.method != "mtl"
    assert finished_metrics(config.replace(mtl_epochs=3)) is not None
    assert finished_metrics(config.replace(ewc_lambda=1.0)) is not None
    assert finished_metrics(config.replace(lr=1e-4)) is None  # a key it reads
    # The MTL run itself is recomputed when its epochs change.
    metrics["config"]["method"] = "mtl"
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    mtl = config.replace(method="mtl")
    assert finished_metrics(mtl) is not None
    assert finished_metrics(mtl.replace(mtl_epochs=3)) is None
