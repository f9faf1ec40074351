"""Known harmless third-party noise: left out by our entry points, never at import."""

import json
import logging
import os
import subprocess
import sys
import warnings

import pytest

from fcit_flower.cli import build_parser
from fcit_flower.launch.quiet import HARMLESS_WARNINGS, LogNoise, quiet_this_process

E = "\x1b[92mINFO \x1b[0m:      "
W = "\x1b[93mWARNING \x1b[0m:   "
ACTOR = "\x1b[36m(ClientAppActor pid=582)\x1b[0m "
SITE = "/venv/lib/python3.11/site-packages"
# Lines of a real `flwr run` log (Flower 1.42, torch 2.13, transformers 5, Ray 2).
NOISE = [
    "Using SuperLink: fcit (127.0.0.1:52899)",
    f"{E}Starting logstream for run_id `8540478004301028638`",
    "Successfully installed fcit-flower to /tmp/fcit-flwr-98b3b581/apps/fcit-flower.",
    f"{W}Since flwr 1.32, default simulated SuperNodes changed from 10 to 2.",
    f"{E}To change federation size, use the following command:",
    f"{E}\tflwr federation simulation-config @none/default <superlink> "
    "--num-supernodes <N>",
    f"{SITE}/torch/jit/_script.py:365: DeprecationWarning: `torch.jit.script_method` "
    "is deprecated. Please switch to `torch.compile` or `torch.export`.",
    "  warnings.warn(",
    f"{SITE}/ray/_private/worker.py:2051: FutureWarning: Tip: In future versions of "
    "Ray, Ray will no longer override accelerator visible devices env var if "
    "num_gpus=0 or num_gpus=None (default).",
    "  warnings.warn(",
    f"{ACTOR}{SITE}/transformers/modeling_utils.py:3312: FutureWarning: "
    "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use "
    "`is_activation_checkpointing` instead.",
    f"{ACTOR}  warnings.warn(",
    "Loading weights: 100%|██████████| 64/64 [00:00<00:00, 6827.29it/s]",
    f"{W}fraction_evaluate is set to 0.0. Federated evaluation will be skipped.",
    f"{E}\t├── ConfigRecord (evaluate): (empty!)",
    f"{ACTOR}{W}Manually terminating ClientAppActor",
    "Failed to load CPU gemm_4bit_forward from kernels-community: No module named "
    "'kernels'. Please make sure you already `pip install kernels`",
]
KEPT = [
    f"{E}Federation `@none/default` (2 simulated SuperNodes)",
    f"{E}FCIT run disco-hom-task-b1-s0: disco, hom, task, beta=1",
    f"{E}stage 1/2: training, 1 rounds",
    f"{E}\t├── ConfigRecord (train): {{'stage': 0, 'round-offset': 0}}",
    f"{E}[ROUND 1/1]",
    f"{E}DKO: client 0 (imagenet-r) -> subspace 0 (cos 1.000, new)",
    f"{W}node 3 left out: site 2 has no data",
    "/app/fcit_flower/training.py:10: UserWarning: something of ours",
    "  warnings.warn(",
]


def test_known_noise_is_left_out_and_everything_else_kept():
    noise = LogNoise()
    assert [line for line in NOISE if noise(line) is not None] == []
    assert [noise(line) for line in KEPT] == KEPT


def test_in_a_file_the_colour_codes_go_too():
    assert LogNoise(plain=True)(f"{E}[ROUND 1/1]") == "INFO :      [ROUND 1/1]"
    assert LogNoise(plain=True)(f"{E}Final results:") == (
        "INFO :      Flower's summary of this stage (the run goes on):"
    )


def test_flowers_per_stage_summary_does_not_read_like_the_end():
    noise = LogNoise()
    assert noise(f"{E}Final results:") == (
        f"{E}Flower's summary of this stage (the run goes on):"
    )
    assert noise(f"{E}Strategy execution finished in 4.87s") == (
        f"{E}This stage's rounds finished in 4.87s"
    )


def test_this_process_filters_exact_messages_only(monkeypatch):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    root = logging.getLogger()
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_this_process()
            quiet_this_process()  # a second command in the same process
            assert len(handler.filters) == 1
            for category, text in HARMLESS_WARNINGS:
                warnings.warn(text + " (details)", category, stacklevel=2)
            warnings.warn(
                "`torch.jit.script_method` is fine", DeprecationWarning, stacklevel=2
            )
            warnings.warn("ours", UserWarning, stacklevel=2)
        bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
        bnb.warning("Failed to load CPU gemm_4bit_forward from kernels-community: x")
        bnb.warning("a bitsandbytes message we do not know")
    finally:
        root.removeHandler(handler)
        for other in root.handlers:  # pytest's own: leave them as they were
            other.filters = [
                f
                for f in other.filters
                if f.__class__.__module__ != ("fcit_flower.launch.quiet")
            ]
    assert [str(w.message) for w in caught] == [
        "`torch.jit.script_method` is fine",
        "ours",
    ]
    assert seen == ["a bitsandbytes message we do not know"]
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_importing_the_package_installs_none_of_these_filters():
    code = (
        "import json, logging, warnings\n"
        "import fcit_flower.cli, fcit_flower.launch.quiet, fcit_flower.server_app\n"
        "from fcit_flower.launch.quiet import HARMLESS_WARNINGS\n"
        "ours = [f for f in warnings.filters if f[1] is not None and any("
        "f[1].match(text) for _, text in HARMLESS_WARNINGS)]\n"
        "handlers = [h.filters for h in logging.getLogger().handlers]\n"
        "print(json.dumps([len(ours), sum(map(len, handlers))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == [0, 0]


def test_help_is_plain_text_with_defaults(capsys):
    parser = build_parser()
    assert "``" not in parser.format_help()
    assert parser.description.startswith("fcit-flower: run several methods")
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: zeroshot,finetune,disco,mtl)" in text
    assert "(default: results)" in text and "(default: 3600.0)" in text
    assert "--verbose" in text
    assert parser.parse_args(["resume", "r", "--verbose"]).verbose


def test_compare_says_which_run_it_is_on_and_what_its_time_counts(
    tmp_path, monkeypatch, capsys
):
    import fcit_flower.cli as cli
    import fcit_flower.runtime as runtime

    fake = {"last": 1.0, "avg": 2.0, "bwt": 0.0, "flower_wall_seconds": 98.3}
    fake["wall_seconds"] = 54.5
    monkeypatch.setattr(cli, "run_one", lambda config, **kwargs: dict(fake))
    monkeypatch.setattr(runtime, "prepare_runtime", lambda config: None)
    argv = ["compare", "--methods", "finetune,disco", "--results-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "run 1/2: finetune seed 0 (hom-task-b1)" in err
    assert "run 2/2: disco seed 0 (hom-task-b1)" in err
    assert "(98.3 s through flwr run, 54.5 s in the ServerApp)" in err
