"""The tiny base's shape and pre-training budget, and the named bases.

Plain data (no torch): which tiny base a process uses (``$FCIT_TINY_BASE``) is
decided here; :mod:`fcit_flower.models.tiny` builds, caches and loads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fcit_flower.tasks.mini_fcit.pretrain import (
    ALIGNMENT_EXAMPLES,
    CORPUS_EXAMPLES,
    CORPUS_SEED,
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny LLaVA and of its pre-training run.

    Attributes
    ----------
    image_size, patch_size : int
        Vision tower input; ``(image_size / patch_size) ** 2`` image tokens.
    vision_hidden, vision_layers : int
        Width and depth of the vision tower.
    text_hidden, text_intermediate, text_layers, heads : int
        Width, MLP width, depth and attention heads of the language model.
    vocab_size : int
        Byte-level BPE vocabulary (special tokens included).
    alignment_examples, pretrain_examples : int
        Sizes of the stage-1 (description) and stage-2 (instruction) corpora; their
        images are excluded from mini-FCIT.
    alignment_steps, pretrain_steps : int
        Optimizer steps of stage 1 and stage 2.
    pretrain_batch, pretrain_lr : int, float
        Batch size and peak learning rate of both stages (cosine decay per stage).
    seed : int
        Seed of initialisation, corpus and pre-training order.
    """

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 128
    text_intermediate: int = 352
    text_layers: int = 3
    heads: int = 4
    vocab_size: int = 1024
    alignment_examples: int = ALIGNMENT_EXAMPLES
    pretrain_examples: int = CORPUS_EXAMPLES
    alignment_steps: int = 2500
    pretrain_steps: int = 3000
    pretrain_batch: int = 32
    pretrain_lr: float = 1e-3
    seed: int = CORPUS_SEED

    @property
    def num_image_tokens(self) -> int:
        """Number of ``<image>`` placeholders per image (CLS token dropped)."""
        return (self.image_size // self.patch_size) ** 2


# Named bases. "standard" is the benchmark's; "smoke" is the test suite's (the same
# corpus and code, a narrower model and a few hundred steps: about a minute on 2
# cores); "deep" is a candidate with twice the language model's layers, for the
# pooled learnability probe (BENCHMARKS "Why MTL misses three tasks"). Reported
# benchmark tables come from "standard".
TINY_BASES = {
    "standard": TinyModelSpec(),
    "smoke": TinyModelSpec(
        vision_hidden=32,
        text_hidden=64,
        text_intermediate=176,
        text_layers=2,
        alignment_examples=3000,
        pretrain_examples=3000,
        alignment_steps=300,
        pretrain_steps=300,
    ),
    "deep": TinyModelSpec(text_layers=6),
}
TINY_BASE_ENV = "FCIT_TINY_BASE"


def tiny_base_spec() -> TinyModelSpec:
    """The spec named by ``$FCIT_TINY_BASE`` (default ``standard``)."""
    name = os.environ.get(TINY_BASE_ENV, "standard")
    if name not in TINY_BASES:
        raise ValueError(
            f"{TINY_BASE_ENV}={name!r} is not a tiny base; choose one of "
            f"{sorted(TINY_BASES)}"
        )
    return TINY_BASES[name]
