"""The files of an export, method by method, without a run.

PEFT adapters are written as PEFT's own ``save_pretrained`` writes them; O-/M-LoRA's
blocks become one PEFT LoRA and come back; MoELoRA and any other method keep their
arrays in ``arrays.safetensors``; every export reads back to the arrays written.
"""

import copy
import json

import numpy as np
import pytest
import safetensors.numpy
from peft import LoraConfig, PeftModel, get_peft_model

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.export.layout import should_export
from fcit_flower.export.tensors import read_peft_adapter, save_peft_adapter
from fcit_flower.methods.lora_blocks import concat_blocks, split_blocks
from fcit_flower.methods.registry import get_method
from fcit_flower.models.adapters import (
    load_base,
    load_lora_state,
    lora_config,
    lora_state,
    projector_state,
)
from fcit_flower.models.tiny import ensure_tiny_base

RNG = np.random.default_rng(0)


def _random_like(arrays):
    return {k: RNG.normal(size=v.shape).astype(np.float32) for k, v in arrays.items()}


@pytest.mark.parametrize("with_projector", [False, True])
def test_peft_files_are_what_peft_save_pretrained_writes(tmp_path, with_projector):
    base = load_base(str(ensure_tiny_base())).model
    config = lora_config(8, 2.0, 0.05)
    if with_projector:
        config = LoraConfig(
            **{**config.to_dict(), "modules_to_save": ["multi_modal_projector"]}
        )
    model = get_peft_model(copy.deepcopy(base), config)
    arrays = _random_like(lora_state(model))
    if with_projector:  # PEFT loads modules_to_save with the LoRA tensors
        arrays.update(_random_like(projector_state(base)))
    load_lora_state(model, arrays)
    model.save_pretrained(tmp_path / "peft")
    save_peft_adapter(
        tmp_path / "ours", arrays, rank=8, scaling=2.0, dropout=0.05, base_name="base"
    )
    theirs = safetensors.numpy.load_file(
        tmp_path / "peft" / "adapter_model.safetensors"
    )
    ours = safetensors.numpy.load_file(tmp_path / "ours" / "adapter_model.safetensors")
    assert sorted(theirs) == sorted(ours)
    assert all(np.array_equal(theirs[k], ours[k]) for k in theirs)
    peft_config, our_config = (
        json.loads((tmp_path / d / "adapter_config.json").read_text())
        for d in ("peft", "ours")
    )
    differing = {k for k in peft_config if peft_config[k] != our_config.get(k)}
    assert differing <= {"base_model_name_or_path", "task_type"}
    # and stock PEFT loads it back into the same tensors
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
    state = lora_state(loaded)
    assert state and all(np.array_equal(state[k], arrays[k]) for k in state)
    assert read_peft_adapter(tmp_path / "ours").keys() == arrays.keys()


def test_blocks_become_one_lora_with_the_same_sum():
    blocks = [
        {
            "m.lora_A.weight": RNG.normal(size=(4, 6)),
            "m.lora_B.weight": RNG.normal(size=(5, 4)),
        }
        for _ in range(3)
    ]
    merged = concat_blocks(blocks)
    assert merged["m.lora_A.weight"].shape == (12, 6)
    delta = merged["m.lora_B.weight"] @ merged["m.lora_A.weight"]
    expected = sum(b["m.lora_B.weight"] @ b["m.lora_A.weight"] for b in blocks)
    np.testing.assert_allclose(delta, expected, rtol=1e-12)
    back = split_blocks(merged, 4)
    assert len(back) == 3
    assert all(
        np.array_equal(b[k], o[k]) for b, o in zip(back, blocks, strict=True) for k in o
    )


@pytest.mark.parametrize("method", ["olora", "mlora", "moelora", "finetune", "ewc"])
def test_export_reads_back_to_the_arrays_written(tmp_path, method):
    config = RunConfig(method=method)
    rank = config.subspace_rank if method in ("olora", "mlora") else config.lora_rank
    module = "model.language_model.layers.0.mlp.up_proj"
    if method == "moelora":
        arrays = {
            f"{module}.lora_A": RNG.normal(size=(8, 4, 6)),
            f"{module}.lora_B": RNG.normal(size=(8, 5, 4)),
            f"{module}.lora_router": RNG.normal(size=(8, 6)),
        }
    elif method in ("olora", "mlora"):
        arrays = {
            f"block{b}/{module}.lora_{f}.weight": RNG.normal(size=s)
            for b in range(2)
            for f, s in (("A", (rank, 6)), ("B", (5, rank)))
        }
    else:
        arrays = {
            f"{module}.lora_A.weight": RNG.normal(size=(rank, 6)),
            f"{module}.lora_B.weight": RNG.normal(size=(5, rank)),
        }
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    arrays["model.multi_modal_projector.linear_1.weight"] = RNG.normal(
        size=(3, 3)
    ).astype(np.float32)
    handler = get_method(method)
    layout = handler.export_arrays(config, arrays, folder=tmp_path, base_name="base")
    kind = "moe-lora" if method == "moelora" else "peft"
    assert layout["kind"] == kind
    assert (
        tmp_path / ("arrays.json" if kind == "moe-lora" else "adapter_config.json")
    ).is_file()
    back = handler.import_arrays(config, tmp_path)
    assert back.keys() == arrays.keys()
    assert all(np.array_equal(back[k], arrays[k]) for k in arrays)


def test_export_modes():
    assert [should_export("every-stage", s, 3) for s in range(3)] == [True] * 3
    assert [should_export("final", s, 3) for s in range(3)] == [False, False, True]
    assert not any(should_export("off", s, 3) for s in range(3))
    with pytest.raises(ConfigError, match="export"):
        RunConfig.from_mapping({"export": "sometimes"})


def test_base_files_are_linked_not_copied_per_stage(tmp_path):
    from fcit_flower.export.stage import copy_base

    source = tmp_path / "cache"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"weights")
    (source / "config.json").write_text("{}")
    (source / "sub").mkdir()  # only files travel
    for stage in (1, 2):
        copy_base(source, tmp_path / f"stage-{stage}" / "base")
    first, second = (tmp_path / f"stage-{k}" / "base" for k in (1, 2))
    assert sorted(p.name for p in first.iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert (second / "model.safetensors").read_bytes() == b"weights"
    # one file system here: the stages share the cache's bytes
    assert (first / "model.safetensors").samefile(source / "model.safetensors")
    assert (second / "model.safetensors").stat().st_nlink == 3
