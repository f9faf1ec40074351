import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from fcit_flower.methods.disco import ssa_weights
from fcit_flower.models.subspace_lora import SubspaceLoraLinear, inject_subspace_lora


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.language_model = nn.Module()
        self.language_model.up_proj = nn.Linear(6, 5)


def _peft_reference(base, a, b, scaling):
    """A PEFT LoRA of rank r with the given factors."""
    model = Mlp()
    model.language_model.up_proj = base
    rank = a.shape[0]
    peft = get_peft_model(
        model,
        LoraConfig(r=rank, lora_alpha=scaling * rank, target_modules=["up_proj"]),
    )
    layer = peft.base_model.model.language_model.up_proj
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(a)
        layer.lora_B["default"].weight.copy_(b)
    return peft


def _random_layer(num, rank, seed=0):
    torch.manual_seed(seed)
    layer = SubspaceLoraLinear(
        nn.Linear(6, 5), num_subspaces=num, rank=rank, scaling=2.0
    )
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def test_single_subspace_equals_plain_peft_lora():
    layer = _random_layer(1, 4)
    layer.set_activation(torch.ones(1))
    x = torch.randn(3, 7, 6)
    peft = _peft_reference(layer.base_layer, layer.lora_A[0], layer.lora_B[0], 2.0)
    want = peft.base_model.model.language_model.up_proj(x)
    torch.testing.assert_close(layer(x), want)


def test_one_hot_activation_equals_that_subspace():
    layer = _random_layer(4, 2)
    x = torch.randn(2, 3, 6)
    layer.set_activation(torch.tensor([0.0, 0.0, 1.0, 0.0]))
    single = _random_layer(1, 2)
    single.base_layer = layer.base_layer
    with torch.no_grad():
        single.lora_A[0].copy_(layer.lora_A[2])
        single.lora_B[0].copy_(layer.lora_B[2])
    single.set_activation(torch.ones(1))
    torch.testing.assert_close(layer(x), single(x))


def test_per_example_weights_equal_separate_batches():
    layer = _random_layer(3, 2)
    x = torch.randn(2, 4, 6)
    weights = torch.tensor([[0.2, 0.8, 0.0], [0.5, 0.25, 0.25]])
    layer.set_activation(weights)
    batched = layer(x)
    for i in range(2):
        layer.set_activation(weights[i])
        torch.testing.assert_close(batched[i : i + 1], layer(x[i : i + 1]))


def test_delta_weight_matches_forward():
    layer = _random_layer(3, 2)
    w = torch.tensor([0.1, 0.3, 0.6])
    layer.set_activation(w)
    x = torch.randn(5, 6)
    expected = layer.base_layer(x) + x @ layer.delta_weight(w).T
    torch.testing.assert_close(layer(x), expected)


def test_only_active_subspace_gets_gradient():
    layer = _random_layer(4, 2)
    layer.set_activation(torch.tensor([0.0, 1.0, 0.0, 0.0]))
    layer(torch.randn(3, 6)).sum().backward()
    grad = layer.lora_A.grad.abs().sum(dim=(1, 2))
    assert grad[1] > 0
    assert torch.all(grad[[0, 2, 3]] == 0)


def test_inject_targets_only_named_linears_in_scope():
    model = Mlp()
    layers = inject_subspace_lora(
        model, ("up_proj",), num_subspaces=2, rank=2, scaling=1.0
    )
    assert list(layers) == ["language_model.up_proj"]
    with pytest.raises(ValueError, match="no nn.Linear"):
        inject_subspace_lora(
            Mlp(), ("gate_proj",), num_subspaces=2, rank=2, scaling=1.0
        )


def test_bad_activation_shape():
    with pytest.raises(ValueError, match="3 weights for 4"):
        _random_layer(4, 2).set_activation(torch.ones(3))


TOKENS = np.array([[1.0, 0.0], [0.0, 1.0]])
FEATURES = np.array([[1.0, 0.2], [0.1, 1.0]])


def test_ssa_softmax_sums_to_one_and_prefers_closest():
    w = ssa_weights(FEATURES, TOKENS, capacity=4, mode="softmax", eps=0.05)
    assert w.shape == (2, 4)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    assert w[0, 0] > 0.99 and w[1, 1] > 0.99
    assert np.all(w[:, 2:] == 0)


def test_ssa_modes():
    concat = ssa_weights(FEATURES, TOKENS, capacity=3, mode="concat")
    np.testing.assert_array_equal(concat, [[1, 1, 0], [1, 1, 0]])
    argmax = ssa_weights(FEATURES, TOKENS, capacity=3, mode="argmax")
    np.testing.assert_array_equal(argmax, [[1, 0, 0], [0, 1, 0]])
    cosine = ssa_weights(FEATURES, TOKENS, capacity=2, mode="cosine")
    np.testing.assert_allclose(
        cosine[0], [1 / np.sqrt(1.04), 0.2 / np.sqrt(1.04)], rtol=1e-6
    )
    # a large temperature flattens the softmax towards uniform
    flat = ssa_weights(FEATURES, TOKENS, capacity=2, mode="softmax", eps=100.0)
    np.testing.assert_allclose(flat, 0.5, atol=0.01)


def test_ssa_without_tokens_is_zero():
    w = ssa_weights(FEATURES, np.zeros((0, 2)), capacity=3)
    assert not w.any()


def test_combine_features_sources():
    from fcit_flower.models.identity import combine_features

    text = np.array([[3.0, 4.0]])
    image = np.array([[0.0, 2.0]])
    assert combine_features("text", text, None) is text
    assert combine_features("image", None, image) is image
    both = combine_features("text+image", text, image)
    np.testing.assert_allclose(both, [[0.6, 0.8, 0.0, 1.0]])
    with pytest.raises(ValueError, match="token-source 'image'"):
        combine_features("image", text, None)
