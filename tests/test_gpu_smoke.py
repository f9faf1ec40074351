"""The GPU smoke script: skips without CUDA; its CPU twin runs the same 4-bit path."""

import pytest
import torch

from fcit_flower.models.llava_checkpoint import LlavaShape
from scripts.gpu_smoke import main, run_smoke

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
