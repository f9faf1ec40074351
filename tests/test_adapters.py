"""Adapter tensors: PEFT save/load round trip, targets, only adapters travel.

And one set of base weights per process, shared by every adapted model.
"""

import copy
from functools import partial

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model

from fcit_flower.config import RunConfig
from fcit_flower.methods.lora_blocks import run_block_model
from fcit_flower.methods.moelora import _shape as moe_shape
from fcit_flower.methods.moelora import moe_model
from fcit_flower.models.adapters import (
    LORA_TARGETS,
    _projector,
    adapted_model,
    load_lora_state,
    lora_config,
    lora_state,
    projector_state,
    subspace_model,
)
from fcit_flower.models.moe_lora import MoeLoraLinear, inject_moe_lora
from fcit_flower.models.subspace_lora import SubspaceLoraLinear, inject_subspace_lora
from fcit_flower.runtime import prepare_runtime
from fcit_flower.tasks.data import client_samples
from fcit_flower.training import train_adapter, training_batch


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


# One set of base weights per process: every adapted model shares the base's tensors.


def _base_storages(model):
    """Storage pointers of the frozen base tensors (not adapters, not projector)."""
    tensors = [
        *(p for n, p in model.named_parameters() if "lora_" not in n),
        *model.buffers(),
    ]
    named = dict(model.named_parameters())
    projector = {id(p) for n, p in named.items() if "multi_modal_projector" in n}
    return {t.untyped_storage().data_ptr() for t in tensors if id(t) not in projector}


def _every_adapted_model(runtime, config):
    path = runtime.base_path
    return {
        "peft": adapted_model(path, 8, 2.0, 0.0),
        "peft-subspace": adapted_model(path, 2, 2.0, 0.05),
        "subspace": subspace_model(path, 4, 2, 2.0),
        "blocks": run_block_model(config, runtime),
        "moe": moe_model(config, path),
    }


def test_a_process_holds_one_set_of_base_weights(runtime):
    config = RunConfig(train_size=40, test_size=5, moelora_experts=4)
    base = runtime.bundle.model
    models = _every_adapted_model(runtime, config)
    held = set().union(*(_base_storages(m) for m in models.values()))
    assert held == _base_storages(base)
    # The projector is each model's own: training it never touches the base's.
    projectors = [
        _projector(m).linear_1.weight.data_ptr() for m in [base, *models.values()]
    ]
    assert len(set(projectors)) == len(projectors)


def test_adapter_kinds_do_not_see_each_other(runtime):
    from peft.tuners.lora import LoraLayer

    config = RunConfig(train_size=40, test_size=5, moelora_experts=4)
    models = _every_adapted_model(runtime, config)
    kinds = {
        name: {
            type(m)
            for m in model.modules()
            if isinstance(m, (LoraLayer, SubspaceLoraLinear, MoeLoraLinear))
        }
        for name, model in models.items()
    }
    assert len(kinds["peft"]) == 1 and issubclass(kinds["peft"].pop(), LoraLayer)
    assert kinds["subspace"] == kinds["blocks"] == {SubspaceLoraLinear}
    assert kinds["moe"] == {MoeLoraLinear}
    assert not any("lora_" in n for n, _ in runtime.bundle.model.named_parameters())


def _message(model, seed):
    """Random adapter and projector arrays: what a TRAIN message carries."""
    rng = np.random.default_rng(seed)
    lora = {
        k: rng.normal(scale=0.05, size=v.shape).astype(np.float32)
        for k, v in lora_state(model).items()
    }
    projector = {
        k: (v + rng.normal(scale=0.01, size=v.shape)).astype(np.float32)
        for k, v in projector_state(model).items()
    }
    return lora, projector


def _train(model, config, runtime, samples, lora, projector, seed):
    load_lora_state(model, lora)
    loss = train_adapter(model, config, runtime.bundle, samples, projector, seed=seed)
    return loss, lora_state(model), projector_state(model)


def test_the_shared_model_trains_as_a_fresh_copy_message_after_message(runtime):
    """Two messages on the cached model == each on a fresh deep copy of the base."""
    # Batch 2: four steps, so that training moves the adapter and the projector
    # (the first step of the warm-up has learning rate 0).
    config = RunConfig(train_size=40, test_size=5, train_projector=True, batch_size=2)
    samples = client_samples(config, runtime.schedule, runtime.root, 0, 0)[:8]
    base = runtime.bundle.model
    base_projector = projector_state(base)
    shared = adapted_model(runtime.base_path, 8, 2.0, 0.05)
    other = subspace_model(runtime.base_path, 4, 2, 2.0)  # another kind, same base
    for seed in (1, 2):
        lora, projector = _message(shared, seed)
        fresh = get_peft_model(copy.deepcopy(base), lora_config(8, 2.0, 0.05))
        expected = _train(fresh, config, runtime, samples, lora, projector, seed)
        got = _train(shared, config, runtime, samples, lora, projector, seed)
        assert got[0] == expected[0]
        first = next(iter(lora))
        assert not np.array_equal(got[1][first], lora[first])  # it did train
        for want, have in zip(expected[1:], got[1:], strict=True):
            assert set(want) == set(have)
            for key in want:
                np.testing.assert_array_equal(have[key], want[key])
        # Between messages, another adapted model runs on the same base weights.
        with torch.no_grad():
            other(**_eval_batch(runtime, samples))
    for key, value in projector_state(base).items():
        np.testing.assert_array_equal(value, base_projector[key])
    assert all(p.grad is None for p in shared.parameters())  # none kept


def _eval_batch(runtime, samples):
    bundle = runtime.bundle
    return training_batch(
        bundle.tokenizer, samples[:2], bundle.image_size, bundle.num_image_tokens
    )


def test_shared_subspace_and_moe_models_compute_as_fresh_copies(runtime):
    config = RunConfig(train_size=40, test_size=5, moelora_experts=4)
    path, base = runtime.base_path, runtime.bundle.model
    samples = client_samples(config, runtime.schedule, runtime.root, 0, 0)[:2]
    batch = _eval_batch(runtime, samples)
    experts, rank, top_k, scaling, dropout = moe_shape(config)
    cases = [
        (
            subspace_model(path, 4, 2, 2.0),
            partial(inject_subspace_lora, num_subspaces=4, rank=2, scaling=2.0),
        ),
        (
            moe_model(config, path),
            partial(
                inject_moe_lora,
                num_experts=experts,
                rank=rank,
                top_k=top_k,
                scaling=scaling,
                dropout=dropout,
            ),
        ),
    ]
    rng = np.random.default_rng(0)
    for shared, inject in cases:
        fresh = copy.deepcopy(base)
        inject(fresh, LORA_TARGETS)
        adapters = {n: p for n, p in shared.named_parameters() if "lora_" in n}
        state = {
            n: torch.from_numpy(rng.normal(scale=0.05, size=p.shape).astype("f4"))
            for n, p in adapters.items()
        }
        with torch.no_grad():
            for model in (shared, fresh):
                for name, param in model.named_parameters():
                    if "lora_" in name:
                        param.copy_(state[name])
                model.eval()
            assert torch.equal(shared(**batch).logits, fresh(**batch).logits)
