"""The real-model path at small dimensions: LLaVA checkpoint from model-path, QLoRA."""

import copy
import json

import bitsandbytes as bnb
import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from llava_runs import llava_run_config

from fcit_flower.client_app import app as client_app
from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.inprocess import InProcessGrid
from fcit_flower.models.adapters import (
    adapted_model,
    load_base,
    lora_state,
    projector_state,
    register_base,
)
from fcit_flower.models.llava import (
    LoadOptions,
    load_llava,
    restore_4bit_training_layout,
)
from fcit_flower.models.llava_checkpoint import write_llava_checkpoint
from fcit_flower.protocol import to_record
from fcit_flower.server_app import main
from fcit_flower.tasks.mini_fcit import vocabulary_texts


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_llava_checkpoint(
        tmp_path_factory.mktemp("llava") / "ckpt", vocabulary_texts()
    )


def _batch(parts, seed=1):
    generator = torch.Generator().manual_seed(seed)
    tokens = parts.num_image_tokens
    ids = torch.randint(
        10, parts.tokenizer.vocab_size, (2, tokens + 12), generator=generator
    )
    ids[:, 1 : 1 + tokens] = parts.tokenizer.image_id
    labels = ids.clone()
    labels[:, : 1 + tokens] = -100
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "pixel_values": torch.randn(2, 3, parts.image_size, parts.image_size),
    }


def _lora_grads(model, batch):
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    return {
        n: p.grad.detach().clone()
        for n, p in model.named_parameters()
        if "lora_" in n and p.grad is not None
    }


def _dequantized(model):
    """A copy of ``model`` whose 4-bit layers are plain float32 nn.Linear."""
    reference = copy.deepcopy(model)
    restore_4bit_training_layout(reference)
    for module in list(reference.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                weight = bnb.functional.dequantize_4bit(
                    child.weight.data, child.weight.quant_state
                )
                linear = torch.nn.Linear(
                    child.in_features, child.out_features, bias=False
                )
                linear.weight.data = weight.float()
                setattr(module, name, linear)
    return reference


def _relative_error(grads, reference):
    assert grads.keys() == reference.keys() and grads
    return max(
        float((grads[k] - reference[k]).norm() / reference[k].norm()) for k in reference
    )


def test_config_rejects_missing_or_wrong_checkpoints(tmp_path, checkpoint):
    with pytest.raises(ConfigError, match="model-path is empty"):
        RunConfig(model="llava").validate()
    with pytest.raises(ConfigError, match="no config.json"):
        RunConfig(model="llava-1.5-7b", model_path=str(tmp_path)).validate()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match="model_type='llama'"):
        RunConfig(model="llava", model_path=str(tmp_path)).validate()
    with pytest.raises(ConfigError, match="quantization='4bit' needs a LLaVA"):
        RunConfig(quantization="4bit").validate()
    with pytest.raises(ConfigError, match="torch-dtype"):
        RunConfig(
            model="llava", model_path=str(checkpoint), torch_dtype="fp8"
        ).validate()
    RunConfig(model="llava", model_path=str(checkpoint), quantization="4bit").validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_requested_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        RunConfig(device="cuda").validate()


def test_lora_targets_are_exactly_the_language_model_mlp(checkpoint):
    path = str(checkpoint)
    register_base(path, LoadOptions(model="llava"))
    bundle = load_base(path)
    model = adapted_model(path, 4, 2.0, 0.0)
    state = lora_state(model)
    modules = {k.rsplit(".", 2)[0] for k in state}
    text = bundle.model.config.text_config
    expected = {
        f"model.language_model.layers.{i}.mlp.{p}"
        for i in range(text.num_hidden_layers)
        for p in ("gate_proj", "up_proj", "down_proj")
    }
    assert modules == expected
    # Adapter-only message: exact LoRA sizes, float32, no base weights.
    sizes = {k: v.size for k, v in state.items()}
    hidden, inner = text.hidden_size, text.intermediate_size
    per_layer = 3 * 4 * (hidden + inner)  # rank 4: A (4 x in) + B (out x 4)
    assert sum(sizes.values()) == per_layer * text.num_hidden_layers
    record = to_record(state)
    base_bytes = sum(p.numel() * p.element_size() for p in bundle.model.parameters())
    message_bytes = sum(a.numpy().nbytes for a in record.values())
    assert message_bytes == 4 * sum(sizes.values()) < 0.1 * base_bytes
    assert all(v.dtype == np.float32 for v in state.values())
    assert set(projector_state(bundle.model)) == {
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_1.bias",
        "model.multi_modal_projector.linear_2.weight",
        "model.multi_modal_projector.linear_2.bias",
    }
    # Pixel statistics come from the checkpoint's CLIP image processor.
    assert bundle.image_mean[0] == pytest.approx(0.48145466)


def test_bf16_adapters_travel_as_float32_and_load_back(checkpoint):
    from fcit_flower.models.adapters import get_peft_model, load_lora_state, lora_config

    parts = load_llava(
        str(checkpoint), LoadOptions(model="llava", torch_dtype="bfloat16")
    )
    assert next(parts.model.parameters()).dtype == torch.bfloat16
    model = get_peft_model(parts.model, lora_config(4, 2.0, 0.0))
    state = lora_state(model)
    assert all(v.dtype == np.float32 for v in state.values())
    rng = np.random.default_rng(0)
    new = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in state.items()}
    load_lora_state(model, new)
    again = lora_state(model)
    for key, value in new.items():  # PEFT keeps LoRA factors in float32: exact
        np.testing.assert_array_equal(again[key], value)
    assert model(**_batch(parts)).loss.isfinite()


def test_4bit_lora_gradients_match_the_dequantized_model(checkpoint):
    from fcit_flower.models.adapters import get_peft_model, lora_config

    parts = load_llava(
        str(checkpoint),
        LoadOptions(model="llava", quantization="4bit", torch_dtype="bfloat16"),
    )
    language = parts.model.model.language_model
    assert isinstance(language.layers[0].mlp.gate_proj, bnb.nn.Linear4bit)
    vision_linears = [
        m
        for m in parts.model.model.vision_tower.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    assert vision_linears and not any(
        isinstance(m, bnb.nn.Linear4bit) for m in vision_linears
    )
    assert not isinstance(
        parts.model.model.multi_modal_projector.linear_1, bnb.nn.Linear4bit
    )
    model = get_peft_model(parts.model, lora_config(4, 2.0, 0.0))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # non-zero B, so every factor gets a gradient
            torch.nn.init.normal_(param, std=0.1)
    batch = _batch(parts)
    model.train()
    reference = _lora_grads(_dequantized(model), batch)
    before_eval = _lora_grads(model, batch)
    assert _relative_error(before_eval, reference) < 0.05
    # An eval pass repacks 4-bit weights on AVX512-BF16 CPUs; training must undo it.
    model.eval()
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k != "labels"})
    model.train()
    restored = restore_4bit_training_layout(model)
    if language.layers[0].mlp.gate_proj.base_layer.support_avx512bf16_for_cpu:
        # q, k, v, o, gate, up, down of every layer were repacked, and restored.
        assert restored == 7 * language.config.num_hidden_layers
    after_eval = _lora_grads(model, batch)
    assert _relative_error(after_eval, reference) < 0.05
    # All 3 projections x layers x (A, B) received a gradient.
    assert len(after_eval) == 2 * 3 * language.config.num_hidden_layers


@pytest.mark.parametrize(
    ("quantization", "checkpointing"), [("8bit", False), ("4bit", True)]
)
def test_quantized_variants_train_only_lora(checkpoint, quantization, checkpointing):
    from fcit_flower.models.adapters import get_peft_model, lora_config

    parts = load_llava(
        str(checkpoint),
        LoadOptions(
            model="llava",
            quantization=quantization,
            torch_dtype="bfloat16",
            gradient_checkpointing=checkpointing,
        ),
    )
    model = get_peft_model(parts.model, lora_config(4, 2.0, 0.0))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    model.train()
    grads = _lora_grads(model, _batch(parts))
    # B starts at zero, so only the B factors get a gradient at the first step.
    layers = parts.model.config.text_config.num_hidden_layers
    assert sum(1 for k, g in grads.items() if "lora_B" in k and g.abs().sum() > 0) == (
        3 * layers
    )


def test_llava_end_to_end_in_process(tmp_path, checkpoint):
    # finetune; the 4-bit DISCO twin is in test_gpu_smoke.py
    config = llava_run_config(checkpoint, tmp_path, num_stages=2)
    grid = InProcessGrid(client_app, 2, config)
    main(
        grid,
        Context(
            run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config
        ),
    )
    metrics = json.loads((tmp_path / "llava" / "metrics.json").read_text())
    assert len(metrics["accuracy_matrix"]) == 2
    assert grid.messages_sent > 0
