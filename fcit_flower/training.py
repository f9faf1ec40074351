"""The one local training loop, and generation-based evaluation, of every method.

:func:`train_adapter` trains whatever adapter a method put on the base (PEFT LoRA,
subspace or block layers, MoE experts) and, when it travels, the projector; prompts
are encoded by :mod:`fcit_flower.prompting`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from transformers import get_cosine_schedule_with_warmup

from fcit_flower.config import RunConfig
from fcit_flower.models.adapters import (
    BaseBundle,
    load_projector_state,
    projector_state,
    trainable_param_groups,
)
from fcit_flower.models.llava import restore_4bit_training_layout
from fcit_flower.models.tiny import image_to_tensor
from fcit_flower.prompting import (
    PromptTokenizer,
    encode_for_generation,
    encode_for_training,
)
from fcit_flower.tasks.fcit_data import Sample

TINY_NORM = (0.5, 0.5, 0.5)


def forget_images() -> None:
    """Drop the decoded images (a site worker starting a new run)."""
    _load_image.cache_clear()


@lru_cache(maxsize=65536)
def _load_image(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def load_pixels(
    samples: Sequence[Sample],
    image_size: int,
    mean: Sequence[float] = TINY_NORM,
    std: Sequence[float] = TINY_NORM,
) -> torch.Tensor:
    """Stack the images of ``samples`` into a ``(B, 3, S, S)`` tensor (cached reads).

    Pixels are scaled to [0, 1], then normalised per channel by ``mean`` and ``std``
    (the tiny model's 0.5 / 0.5 maps them to [-1, 1]; CLIP's processor values for a
    LLaVA checkpoint). Images are resized to the square, not cropped.
    """
    arrays = [_load_image(s.image, image_size) for s in samples]
    if tuple(mean) == TINY_NORM and tuple(std) == TINY_NORM:  # bit-identical to before
        return torch.stack([image_to_tensor(a) for a in arrays])
    images = torch.from_numpy(np.stack(arrays))
    pixels = images.permute(0, 3, 1, 2).float().div_(255.0)
    shift = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    scale = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return pixels.sub_(shift).div_(scale)


def training_batch(
    tokenizer: PromptTokenizer,
    batch: Sequence[Sample],
    image_size: int,
    num_image_tokens: int,
    image_mean: Sequence[float] = TINY_NORM,
    image_std: Sequence[float] = TINY_NORM,
) -> dict[str, torch.Tensor]:
    """Model inputs and answer-only labels of a batch of samples (prompt + answer)."""
    return encode_for_training(
        tokenizer,
        [s.question for s in batch],
        [s.answer for s in batch],
        load_pixels(batch, image_size, image_mean, image_std),
        num_image_tokens,
    )


def to_model_device(
    inputs: dict[str, torch.Tensor], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Move a batch to the device of ``model``'s first parameter (CPU or its GPU)."""
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in inputs.items()}


def train_local(
    model: torch.nn.Module,
    tokenizer: PromptTokenizer,
    samples: Sequence[Sample],
    *,
    image_size: int,
    num_image_tokens: int,
    param_groups: list[dict],
    epochs: int,
    batch_size: int,
    warmup_ratio: float,
    seed: int,
    loss_hook: Callable[[], torch.Tensor] | None = None,
    image_mean: Sequence[float] = TINY_NORM,
    image_std: Sequence[float] = TINY_NORM,
) -> float:
    """Train ``model`` on ``samples`` for ``epochs`` epochs; return the mean loss.

    Parameters
    ----------
    param_groups : list of dict
        Optimizer groups (``params`` and ``lr``), e.g. LoRA and projector.
    warmup_ratio : float
        Linear warm-up fraction of a cosine schedule (the reference uses 0.03).
    seed : int
        Seeds the shuffling (and dropout) so a round is reproducible.
    loss_hook : callable, optional
        Extra loss term added at each step (regularisers of some methods).
    image_mean, image_std : sequence of float
        Pixel normalisation of the base (``BaseBundle.image_mean`` / ``image_std``).
    """
    if not samples:
        return float("nan")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    steps = epochs * math.ceil(len(samples) / batch_size)
    optimizer = torch.optim.AdamW(param_groups, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(warmup_ratio * steps), steps
    )
    model.train()
    restore_4bit_training_layout(model)  # after an eval pass of 4-bit layers on CPU
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(samples), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            batch = [samples[i] for i in order[start : start + batch_size]]
            inputs = training_batch(
                tokenizer, batch, image_size, num_image_tokens, image_mean, image_std
            )
            loss = model(**to_model_device(inputs, model)).loss
            if loss_hook is not None:
                loss = loss + loss_hook()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
    # The cached model outlives the message: keep no gradients between messages.
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return float(np.mean(losses))


@torch.no_grad()
def generate_answers(
    model: torch.nn.Module,
    tokenizer: PromptTokenizer,
    samples: Sequence[Sample],
    *,
    image_size: int,
    num_image_tokens: int,
    batch_size: int = 64,
    max_new_tokens: int = 8,
    before_batch: Callable[[Sequence[Sample]], None] | None = None,
    image_mean: Sequence[float] = TINY_NORM,
    image_std: Sequence[float] = TINY_NORM,
) -> list[str]:
    """Greedy-decode an answer for every sample.

    ``before_batch`` is called with each batch before decoding it; Subspace Selective
    Activation uses it to set the per-example subspace weights.
    """
    model.eval()
    answers: list[str] = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        if before_batch is not None:
            before_batch(batch)
        inputs = encode_for_generation(
            tokenizer,
            [s.question for s in batch],
            load_pixels(batch, image_size, image_mean, image_std),
            num_image_tokens,
        )
        output = cast(Any, model).generate(
            **to_model_device(inputs, model),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_id,
            pad_token_id=tokenizer.pad_id,
        )
        prompt_width = inputs["input_ids"].shape[1]
        answers.extend(
            tokenizer.decode(row[prompt_width:].tolist()) for row in output.cpu()
        )
    return answers


def train_adapter(
    model: torch.nn.Module,
    config: RunConfig,
    bundle: BaseBundle,
    samples: Sequence[Sample],
    projector: dict[str, np.ndarray],
    *,
    seed: int,
    epochs: int | None = None,
    loss_hook: Callable[[], torch.Tensor] | None = None,
) -> float:
    """Local training of an adapted model; returns the mean loss.

    Trainable: every parameter named ``lora_*`` and, when it travelled in the
    message (``projector`` not empty) and ``train-projector`` is set, the projector;
    otherwise the base's projector is loaded. Images are normalised with the base's
    pixel statistics. ``epochs`` defaults to ``local-epochs``.
    """
    load_projector_state(model, projector or projector_state(bundle.model))
    groups = trainable_param_groups(
        model,
        lr=config.lr,
        projector_lr=config.projector_lr,
        train_projector=config.train_projector and bool(projector),
    )
    return train_local(
        model,
        bundle.tokenizer,
        samples,
        image_size=bundle.image_size,
        num_image_tokens=bundle.num_image_tokens,
        param_groups=groups,
        epochs=config.local_epochs if epochs is None else epochs,
        batch_size=config.batch_size,
        warmup_ratio=config.warmup_ratio,
        seed=seed,
        image_mean=bundle.image_mean,
        image_std=bundle.image_std,
        loss_hook=loss_hook,
    )
