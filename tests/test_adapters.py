"""Adapter tensors: PEFT save/load round trip, targets, only adapters travel."""

import copy

import numpy as np
import pytest
from peft import PeftModel

from fcit_flower.config import RunConfig
from fcit_flower.models.adapters import (
    adapted_model,
    load_lora_state,
    lora_state,
    projector_state,
)
from fcit_flower.runtime import prepare_runtime


@pytest.fixture(scope="module")
def runtime():
    return prepare_runtime(RunConfig(train_size=40, test_size=5))


def test_lora_targets_exactly_the_language_model_mlp(runtime):
    state = lora_state(adapted_model(runtime.base_path, 8, 2.0, 0.0))
    modules = {k.rsplit(".", 2)[0] for k in state}
    assert modules and all("language_model" in m for m in modules)
    assert {m.rsplit(".", 1)[1] for m in modules} == {
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    layers = runtime.bundle.model.config.text_config.num_hidden_layers
    assert len(modules) == 3 * layers


def test_only_adapter_bytes_travel(runtime):
    state = lora_state(adapted_model(runtime.base_path, 8, 2.0, 0.0))
    adapter_params = sum(v.size for v in state.values())
    base_params = sum(p.numel() for p in runtime.bundle.model.parameters())
    assert adapter_params < 0.05 * base_params
    assert all(v.dtype == np.float32 for v in state.values())
    assert all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in state)
    assert all(
        "multi_modal_projector" in k for k in projector_state(runtime.bundle.model)
    )


def test_peft_save_and_load_round_trip(runtime, tmp_path):
    model = adapted_model(runtime.base_path, 8, 2.0, 0.0)
    rng = np.random.default_rng(0)
    state = {
        k: rng.normal(size=v.shape).astype(np.float32)
        for k, v in lora_state(model).items()
    }
    load_lora_state(model, state)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(runtime.bundle.model), tmp_path)
    again = lora_state(loaded)
    assert set(again) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(again[key], value)


def test_unknown_adapter_key_is_refused(runtime):
    model = adapted_model(runtime.base_path, 8, 2.0, 0.0)
    with pytest.raises(KeyError, match="unknown adapter keys"):
        load_lora_state(
            model, {"model.nowhere.lora_A.weight": np.zeros((8, 4), np.float32)}
        )
