"""EWC: elastic weight consolidation, federated over the LoRA adapter.

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS
2017.

- Fisher: at the end of stage ``t`` (the stage's last round) each sampled client
  estimates the diagonal Fisher of its LoRA parameters as the mean, over its local
  batches, of the squared gradient of the batch's LM loss (the empirical Fisher,
  batch-level), computed on the adapter it just trained; it uploads it under
  ``ewc-fisher/<key>``. The server averages the clients' Fisher by sample count:
  ``F_t``, and accumulates ``F = F_1 + ... + F_t`` across stages.
- Anchor: ``theta*`` = the global adapter at the end of the previous stage.
- Loss in stage ``t + 1``: ``L = L_LM + lambda * sum_i F_i (theta_i - theta*_i)^2``
  (run-config ``ewc-lambda``; the paper's ``lambda / 2`` folded into lambda). With
  the accumulated ``F`` and the latest anchor this is the online-EWC form (Schwarz et
  al., 2018, with gamma = 1), one penalty instead of one per earlier stage.
- The server sends ``theta*`` and ``F`` in the TRAIN message's ArrayRecord under
  ``ewc-anchor/<key>`` and ``ewc-fisher/<key>``
  (:class:`fcit_flower.strategies.ewc.Ewc`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.methods.base import ClientSetup, ClientUpdate, ServerSetup
from fcit_flower.methods.finetune import Finetune, peft_model, peft_update
from fcit_flower.methods.registry import register
from fcit_flower.models.adapters import lora_parameters
from fcit_flower.prompting import PromptTokenizer
from fcit_flower.protocol import (
    ESTIMATE_FISHER,
    FISHER_PREFIX,
    Arrays,
    read_bool,
    split_ewc,
    split_projector,
)
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.training import TINY_NORM, to_model_device, training_batch

if TYPE_CHECKING:
    from fcit_flower.strategies.continual import ContinualFedAvg


def ewc_penalty(
    params: Mapping[str, torch.Tensor],
    anchor: Mapping[str, torch.Tensor],
    fisher: Mapping[str, torch.Tensor],
    lam: float,
) -> torch.Tensor:
    """``lam * sum_i F_i (theta_i - theta*_i)^2`` over the keys of ``fisher``."""
    total = next(iter(params.values())).new_zeros(())
    for key, weight in fisher.items():
        total = total + (weight * (params[key] - anchor[key]).pow(2)).sum()
    return lam * total


def _beside(values: np.ndarray, param: torch.Tensor) -> torch.Tensor:
    """``values`` as a constant tensor on ``param``'s device, in its dtype."""
    return torch.as_tensor(np.asarray(values)).to(param.device, param.dtype)


def penalty_hook(
    model: nn.Module,
    anchor: Mapping[str, np.ndarray],
    fisher: Mapping[str, np.ndarray],
    lam: float,
) -> Callable[[], torch.Tensor] | None:
    """The EWC loss term as a ``train_local`` hook (``None`` before stage 2)."""
    if not fisher or lam == 0:
        return None
    params = lora_parameters(model)
    unknown = sorted(set(fisher) - set(params))[:3]
    if unknown or set(fisher) != set(anchor):
        raise KeyError(f"EWC Fisher/anchor keys do not match the adapter: {unknown}")
    # Beside each parameter (its device and dtype), once, not at every step.
    anchor_t = {k: _beside(anchor[k], params[k]) for k in fisher}
    fisher_t = {k: _beside(v, params[k]) for k, v in fisher.items()}
    return lambda: ewc_penalty(params, anchor_t, fisher_t, lam)


def estimate_fisher(
    model: nn.Module,
    tokenizer: PromptTokenizer,
    samples: Sequence[Sample],
    *,
    image_size: int,
    num_image_tokens: int,
    batch_size: int,
    image_mean: Sequence[float] = TINY_NORM,
    image_std: Sequence[float] = TINY_NORM,
) -> dict[str, np.ndarray]:
    """Diagonal empirical Fisher of the LoRA parameters, keyed ``ewc-fisher/<key>``.

    Mean over the batches (in order, dropout off) of the squared gradient of the
    batch's mean LM loss.
    """
    params = lora_parameters(model)
    sums = {k: torch.zeros_like(p) for k, p in params.items()}
    model.eval()
    batches = 0
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        inputs = training_batch(
            tokenizer, batch, image_size, num_image_tokens, image_mean, image_std
        )
        model.zero_grad(set_to_none=True)
        model(**to_model_device(inputs, model)).loss.backward()
        for key, param in params.items():
            if param.grad is not None:
                sums[key] += param.grad.detach().pow(2)
        batches += 1
    model.zero_grad(set_to_none=True)
    scale = 1.0 / max(batches, 1)
    return {
        FISHER_PREFIX + k: (v * scale).detach().cpu().float().numpy().copy()
        for k, v in sums.items()
    }


class Ewc(Finetune):
    """Finetune's adapter with the EWC penalty and per-stage consolidation."""

    name = "ewc"

    def check_config(self, config: RunConfig) -> None:
        """No differential privacy: Fisher uploads are neither clipped nor noised."""
        if config.dp != "off":
            raise ConfigError(
                f"dp={config.dp!r} is not supported by method={self.name!r}: "
                "its Fisher uploads are averaged without clipping or noise"
            )

    def build_server(self, setup: ServerSetup) -> tuple[ContinualFedAvg, Arrays]:
        """The EWC strategy (Fisher rounds, anchor and Fisher sent down)."""
        from fcit_flower.strategies.ewc import Ewc as EwcStrategy

        strategy = EwcStrategy(
            federation=setup.federation,
            rounds_per_stage=setup.config.rounds_per_stage,
        )
        return strategy, {**self.initial_adapter(setup), **setup.projector()}

    def train_client(self, setup: ClientSetup, received: Arrays) -> ClientUpdate:
        """LM loss + EWC penalty; in a stage's last round, also the Fisher."""
        config, bundle = setup.config, setup.runtime.bundle
        plain, anchor, fisher = split_ewc(received)
        model = peft_model(config, setup.runtime, config.lora_rank, plain)
        projector = split_projector(plain)[1]
        hook = penalty_hook(model, anchor, fisher, config.ewc_lambda)
        loss = setup.train(model, projector, hook)
        arrays = peft_update(model, projector)
        if read_bool(setup.request, ESTIMATE_FISHER):
            arrays.update(
                estimate_fisher(
                    model,
                    bundle.tokenizer,
                    setup.samples,
                    image_size=bundle.image_size,
                    num_image_tokens=bundle.num_image_tokens,
                    batch_size=config.batch_size,
                    image_mean=bundle.image_mean,
                    image_std=bundle.image_std,
                )
            )
        return ClientUpdate(arrays, loss)


register(Ewc())
