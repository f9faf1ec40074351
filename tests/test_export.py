"""Exports after each stage: stock PEFT adapters, DISCO's router, predict, evaluate.

A short Finetune run and a short DISCO run are trained once (in-process); their
exports are then loaded in fresh processes and must reproduce the run's own
accuracy rows exactly.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from llava_runs import llava_run_config

from fcit_flower.checkpoint import CheckpointStore
from fcit_flower.cli import main as cli_main
from fcit_flower.export.layout import exported_stages
from fcit_flower.inprocess import run_inprocess, small_run_config
from fcit_flower.tasks.catalog import get_task
from fcit_flower.tasks.data import test_samples as load_test_set
from fcit_flower.tasks.metrics import score

ROOT = Path(__file__).resolve().parents[1]
STOCK = Path(__file__).with_name("stock_peft_inference.py")
SHORT = {
    **small_run_config(clients=4, per_round=2, train_size=24, test_size=5),
    "batch-size": 2,  # a few local steps, so that the adapters really move
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run directories of a short Finetune and a short DISCO run."""
    results = tmp_path_factory.mktemp("runs")
    for method in ("finetune", "disco"):
        run_inprocess(
            {**SHORT, "method": method, "results-dir": str(results), "run-name": method}
        )
    return {m: results / m for m in ("finetune", "disco")}


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def _data_root(run_dir):
    return Path(json.loads((run_dir / "manifest.json").read_text())["data_root"])


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(*args, cwd=ROOT):
    command = [sys.executable, "-m", "fcit_flower.cli", *map(str, args)]
    return subprocess.run(
        command, env=_env(), cwd=cwd, capture_output=True, text=True, check=True
    )


def test_every_stage_is_exported_with_its_card(runs):
    for method, run_dir in runs.items():
        metrics = _metrics(run_dir)
        for stage in (1, 2):
            folder = run_dir / "adapters" / f"stage-{stage}"
            info = json.loads((folder / "export.json").read_text())
            assert info["stage"] == stage and info["method"] == method
            assert (
                list(info["accuracy_row"].values())
                == (metrics["accuracy_matrix"][stage - 1])
            )
            assert (folder / "base" / "tokenizer.json").is_file()  # self-contained
            card = (folder / "README.md").read_text()
            assert f"after stage {stage} of 2" in card
            assert ", ".join(info["tasks_seen"]) in card
            assert "peft" in info["versions"] and info["data_fingerprints"]
        assert not list((run_dir / "adapters").glob(".*"))  # no staging left


def test_finetune_adapter_loads_with_stock_peft_and_reproduces_the_rows(runs, tmp_path):
    run_dir = runs["finetune"]
    metrics, root = _metrics(run_dir), _data_root(run_dir)
    samples = {t: load_test_set(root, t) for t in metrics["tasks"]}
    questions = {
        t: [{"image": str(s.image), "question": s.question} for s in items]
        for t, items in samples.items()
    }
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    for stage in (1, 2):
        folder = run_dir / "adapters" / f"stage-{stage}"
        weights = safetensors.numpy.load_file(folder / "adapter_model.safetensors")
        assert any(np.abs(v).max() > 0 for k, v in weights.items() if "lora_B" in k)
        result = subprocess.run(  # no PYTHONPATH: fcit_flower is not imported
            [sys.executable, str(STOCK), str(folder), str(tmp_path / "questions.json")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        answers = json.loads(result.stdout.splitlines()[-1])
        row = [
            round(
                score(
                    get_task(t, root).metric,
                    answers[t],
                    [s.answer for s in samples[t]],
                ),
                2,
            )
            for t in metrics["tasks"]
        ]
        assert row == metrics["accuracy_matrix"][stage - 1]


def _in_process(capsys, *args):
    """``fcit-flower ARGS`` in this process: its stdout lines."""
    assert cli_main([str(a) for a in args]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("method", ["finetune", "disco"])
def test_evaluate_and_predict_give_the_runs_answers(runs, method, tmp_path, capsys):
    run_dir = runs[method]
    metrics, root = _metrics(run_dir), _data_root(run_dir)
    for stage in (1, 2):  # the last one in a fresh process
        command = ("evaluate", "--run", run_dir, "--stage", stage)
        out = tmp_path / f"eval-{stage}"
        options = ("--data-root", root, "--out", out)
        if stage == 2:
            _cli(*command, *options)
        else:
            _in_process(capsys, *command, *options)
        scored = _metrics(out)
        assert scored["tasks"] == metrics["tasks"]
        assert scored["accuracy_matrix"][0] == metrics["accuracy_matrix"][stage - 1]
    # the last stage: predict's answers are the evaluation's, and the run's examples
    task = metrics["tasks"][0]
    records = [
        json.loads(line)
        for line in (out / "predictions.jsonl").read_text().splitlines()
    ]
    expected = [r["prediction"] for r in records if r["task"] == task]
    assert expected[:3] == [e[1] for e in metrics["examples"][task]]
    samples = load_test_set(root, task)
    batch = tmp_path / "questions.jsonl"
    batch.write_text(
        "\n".join(
            json.dumps({"image": str(s.image), "question": s.question}) for s in samples
        )
    )
    lines = _cli("predict", "--run", run_dir, "--batch", batch).stdout.splitlines()
    predicted = [json.loads(line) for line in lines]
    assert [p["answer"] for p in predicted] == expected
    if method == "disco":  # SSA weights over the occupied subspaces sum to 1
        assert all(abs(sum(p["subspace_weights"]) - 1) < 1e-3 for p in predicted)
    else:
        assert all("subspace_weights" not in p for p in predicted)
    single = _in_process(
        capsys,
        "predict",
        "--run",
        run_dir,
        "--image",
        samples[0].image,
        "--question",
        samples[0].question,
    )
    assert single[0] == expected[0]
    weights = predicted[0].get("subspace_weights", [])
    shown = "  ".join(f"{k}: {w:.4f}" for k, w in enumerate(weights))
    assert single[1:] == ([f"subspace weights: {shown}"] if weights else [])


def test_disco_router_holds_tokens_and_settings(runs):
    folder = runs["disco"] / "adapters" / "stage-2"
    router = json.loads((folder / "router.json").read_text())
    tokens = safetensors.numpy.load_file(folder / "router.safetensors")
    occupied = router["occupied_slots"]
    assert tokens["identity_tokens"].shape == (occupied, 384)  # MiniLM
    assert (router["tau"], router["ssa_mode"], router["ssa_eps"]) == (
        0.9,
        "softmax",
        0.05,
    )
    assert router["identity_encoder"] == "minilm"
    assert Path(router["identity_encoder_path"]).is_dir()
    for name in router["subspaces"].values():
        config = json.loads((folder / name / "adapter_config.json").read_text())
        assert config["r"] == 4  # lora-rank 32 / 8 subspaces


def test_resumed_run_exports_the_same_bytes(runs, tmp_path):
    run_dir = tmp_path / "finetune"
    shutil.copytree(runs["finetune"], run_dir)
    before = {
        p.relative_to(run_dir): p.read_bytes()
        for p in (run_dir / "adapters" / "stage-2").rglob("*")
        if p.is_file()
    }
    for path in CheckpointStore(run_dir / "checkpoints").files():
        if "-s1-" in path.name:  # back to the end of stage 1
            path.unlink()
    shutil.rmtree(run_dir / "adapters" / "stage-2")
    run_inprocess(
        {
            **SHORT,
            "method": "finetune",
            "results-dir": str(tmp_path),
            "run-name": "finetune",
            "resume": True,
        }
    )
    after = {
        p.relative_to(run_dir): p.read_bytes()
        for p in (run_dir / "adapters" / "stage-2").rglob("*")
        if p.is_file()
    }
    assert after.keys() == before.keys()
    assert [k for k in after if after[k] != before[k]] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--run {tmp}/missing --image {img} --question q", "is not a directory"),
        ("--run {run} --stage 7 --image {img} --question q", "--stage 7 was not"),
        ("--run {run} --image {tmp}/none.png --question q", "none.png"),
        ("--run {run} --image {img}", "needs --image and --question"),
        ("--run {run} --batch {tmp}/none.jsonl", "none.jsonl"),
    ],
)
def test_bad_input_is_one_line(runs, tmp_path, capsys, args, message):
    image = load_test_set(_data_root(runs["finetune"]), "imagenet-r")[0].image
    filled = args.format(tmp=tmp_path, run=runs["finetune"], img=image).split()
    code = cli_main(["predict", *filled])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("fcit-flower: error: ")
    assert message in err[0]


def test_llava_export_names_its_base_and_scores_as_the_run(tmp_path):
    from fcit_flower.export.use import evaluate, load_export
    from fcit_flower.models.llava_checkpoint import write_llava_checkpoint
    from fcit_flower.tasks.mini_fcit import vocabulary_texts

    checkpoint = write_llava_checkpoint(tmp_path / "ckpt", vocabulary_texts())
    run_inprocess(llava_run_config(checkpoint, tmp_path, num_stages=1))
    run_dir = tmp_path / "llava"
    folder = run_dir / "adapters" / "stage-1"
    assert not (folder / "base").exists()  # a checkpoint is named, not copied
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(checkpoint).resolve())
    loaded = load_export(run_dir, data_root=_data_root(run_dir))
    scored = evaluate(loaded, tmp_path / "eval")
    assert scored["accuracy_matrix"] == _metrics(run_dir)["accuracy_matrix"]


@pytest.mark.parametrize(("mode", "stages"), [("final", [2]), ("off", [])])
def test_export_mode_chooses_the_stages(tmp_path, mode, stages):
    run_inprocess(
        {
            **SHORT,
            "rounds-per-stage": 1,
            "method": "finetune",
            "export": mode,
            "results-dir": str(tmp_path),
            "run-name": mode,
        }
    )
    assert exported_stages(tmp_path / mode) == stages
