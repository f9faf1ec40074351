"""Tensors that method code creates follow the model's device.

No GPU here, so the model lives on PyTorch's ``meta`` device: like CUDA, it refuses
to mix its tensors with CPU tensors ("Tensor on device cpu is not on the expected
device meta"), so a mask, anchor or expert created on the CPU fails here exactly
where it would fail on a GPU. The GPU twin is ``scripts/gpu_smoke.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fcit_flower.methods.ewc import penalty_hook
from fcit_flower.methods.lora_blocks import freeze_other_blocks, load_blocks
from fcit_flower.methods.olora import olora_regulariser
from fcit_flower.models.moe_lora import MoeLoraLinear
from fcit_flower.models.subspace_lora import SubspaceLoraLinear

META = torch.device("meta")


def _block_model(device: torch.device = META) -> nn.Module:
    layers = {
        name: SubspaceLoraLinear(
            nn.Linear(6, 5, device=device), num_subspaces=3, rank=2, scaling=1.0
        )
        for name in ("up", "down")
    }
    return nn.ModuleDict(layers)


def _loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return sum((layer(x).pow(2).sum() for layer in model.values()), x.new_zeros(()))


def test_created_layers_sit_on_the_base_layers_device() -> None:
    subspace = SubspaceLoraLinear(
        nn.Linear(6, 5, device=META), num_subspaces=3, rank=2, scaling=1.0
    )
    moe = MoeLoraLinear(
        nn.Linear(6, 5, device=META), num_experts=2, rank=2, top_k=1, scaling=1.0
    )
    for module in (subspace, moe):
        assert {p.device for p in module.parameters()} == {META}
    assert subspace.activation.device == META
    subspace.set_activation(torch.ones(3))  # SSA weights arrive from numpy, on CPU
    assert subspace.activation.device == META


def test_block_training_masks_gradients_on_the_models_device() -> None:
    model = _block_model()
    load_blocks(model, {})  # activation weights of every block: 1
    handles = freeze_other_blocks(model, 1)
    x = torch.ones(4, 6, device=META)
    loss = _loss(model, x) + olora_regulariser(model, 1, lambda_orth=0.5, lambda_l2=0.1)
    loss.backward()  # the masking hooks run here
    for handle in handles:
        handle.remove()
    grads = [layer.lora_A.grad for layer in model.values()]
    assert all(g is not None and g.device == META for g in grads)


def test_block_masks_keep_only_the_trained_block() -> None:
    # The CPU twin of the placement test: same code, values checked.
    model = _block_model(torch.device("cpu"))
    for layer in model.values():
        with torch.no_grad():
            layer.lora_B.fill_(0.1)
    load_blocks(
        model,
        {
            f"block{k}/{name}.{factor}.weight": getattr(layer, factor)[k]
            .detach()
            .numpy()
            .copy()  # load_blocks zeroes the slots before writing them
            for k in range(3)
            for name, layer in model.items()
            for factor in ("lora_A", "lora_B")
        },
    )
    handles = freeze_other_blocks(model, 1)
    _loss(model, torch.ones(4, 6)).backward()
    for handle in handles:
        handle.remove()
    for layer in model.values():
        for param in (layer.lora_A, layer.lora_B):
            assert param.grad is not None
            norms = param.grad.flatten(1).norm(dim=1)
            assert norms[0] == 0 and norms[2] == 0 and norms[1] > 0


def test_ewc_penalty_follows_the_parameters() -> None:
    model = _block_model()
    names = [f"{n}.{f}" for n in model for f in ("lora_A", "lora_B")]
    shapes = {n: tuple(model.get_parameter(n).shape) for n in names}
    anchor = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
    fisher = {n: np.ones(s, np.float32) for n, s in shapes.items()}
    hook = penalty_hook(model, anchor, fisher, 2.0)
    assert hook is not None
    penalty = hook()
    assert penalty.device == META
    penalty.backward()
    assert model.get_parameter(names[0]).grad is not None


def test_ewc_penalty_values_on_cpu() -> None:
    model = _block_model(torch.device("cpu"))
    names = [f"{n}.{f}" for n in model for f in ("lora_A", "lora_B")]
    anchor = {n: model.get_parameter(n).detach().numpy() * 0 for n in names}
    fisher = {n: np.full(model.get_parameter(n).shape, 0.5, np.float32) for n in names}
    hook = penalty_hook(model, anchor, fisher, 2.0)
    assert hook is not None
    expected = sum(float(model.get_parameter(n).detach().pow(2).sum()) for n in names)
    # lam * F * sum(p^2) = 2.0 * 0.5 * sum(p^2)
    assert np.isclose(float(hook().detach()), expected, rtol=1e-5)
