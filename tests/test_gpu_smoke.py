"""The GPU smoke script: skips without CUDA; its CPU twin runs the same 4-bit path
for every method."""

import pytest
import torch

from fcit_flower.models.llava_checkpoint import LlavaShape
from scripts.gpu_smoke import METHODS, main, run_smoke

SHAPE = LlavaShape()


def _adapter_bytes(shape: LlavaShape, rank: int) -> int:
    """float32 bytes of one rank-``rank`` LoRA on gate/up/down of every layer."""
    per_layer = 3 * rank * (shape.text_hidden + shape.text_intermediate)
    return 4 * per_layer * shape.text_layers


def test_cpu_twin_trains_4bit_qlora_with_disco(tmp_path):
    result = run_smoke(
        tmp_path, device="cpu", shape=SHAPE, train_size=8, max_new_tokens=2
    )
    assert result["train_messages"] == 2 * 2 * 2  # clients x rounds x stages
    assert len(result["accuracy_matrix"]) == 2
    assert result["train_steps"] >= result["train_messages"]
    assert result["step_seconds"] > 0
    # Only one DISCO subspace (rank 16 / 4 subspaces = 4) travels down; the reply
    # adds the identity token of the client at most: no base weights, no projector.
    subspace = _adapter_bytes(SHAPE, 4)
    assert set(result["bytes_down"]) == {subspace}
    assert all(subspace <= up < subspace + 4096 for up in result["bytes_up"])


@pytest.mark.parametrize("method", [m for m in METHODS if m != "disco"])
def test_cpu_twin_runs_every_method_in_4bit(tmp_path, method):
    result = run_smoke(
        tmp_path,
        method=method,
        device="cpu",
        shape=SHAPE,
        train_size=8,
        max_new_tokens=2,
    )
    assert result["method"] == method
    assert result["accuracy_matrix"]
    if method == "mtl":  # trained centrally in the ServerApp: no TRAIN messages
        assert result["train_messages"] == 0 and result["step_seconds"] is None
    else:
        assert result["train_messages"] >= 2 * 2 * 2
        assert min(result["bytes_up"]) > 0 and min(result["bytes_down"]) > 0


def test_cpu_twin_command_runs_each_method_in_its_own_process(capfd):
    assert main(["--cpu", "--methods", "olora,moelora", "--train-size", "8"]) == 0
    out = capfd.readouterr().out  # the children write to the inherited stdout
    assert "device: cpu" in out and "FAILED" not in out
    lines = [line for line in out.splitlines() if "bytes per TRAIN message" in line]
    assert [line.split()[0] for line in lines] == ["olora", "moelora"]
    assert all("s/step" in line for line in lines)


def test_unknown_method_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--cpu", "--methods", "fedprox"])
    assert "unknown ['fedprox']" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_cuda_the_script_skips_with_a_message(capsys):
    assert main([]) == 0
    assert "skipped: no CUDA GPU" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_smoke_at_7b_layer_shapes(capsys):
    assert main(["--train-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "peak GPU memory" in out and "s/step" in out
