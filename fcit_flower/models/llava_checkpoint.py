"""Write a randomly initialised LLaVA checkpoint directory, offline.

For tests and the GPU smoke script: a real ``LlavaForConditionalGeneration`` at any
shape (tiny for CPU tests, LLaVA-1.5-7B's layer shapes with few layers for GPU
memory checks), saved with a ``LlavaProcessor`` (a word-level tokenizer trained with
``tokenizers`` + a ``CLIPImageProcessor``), so that it loads through the same
``model-path`` code as a downloaded ``llava-hf/llava-1.5-7b-hf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from torch import nn
from transformers import (
    CLIPImageProcessor,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from fcit_flower.models.llava_shape import LlavaShape, TokenIds, llava_config

__all__ = ["LlavaShape", "word_tokenizer", "write_llava_checkpoint"]

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
#: CLIP's pixel statistics (the processor of LLaVA-1.5).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def word_tokenizer(texts: Sequence[str]) -> PreTrainedTokenizerFast:
    """A lower-cased word-level transformers tokenizer trained on ``texts``."""
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1)
    backend.train_from_iterator(sorted({*texts, "USER: ASSISTANT:"}), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    return tokenizer


def write_llava_checkpoint(
    directory: Path,
    texts: Sequence[str],
    shape: LlavaShape | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Save a random LLaVA (weights, config, processor) to ``directory``.

    Parameters
    ----------
    directory : Path
        Target directory (created).
    texts : Sequence[str]
        Texts the word-level tokenizer must know.
    shape : LlavaShape, optional
        Layer shapes; tiny by default.
    seed : int
        Initialisation seed.
    dtype : torch.dtype
        Dtype of the saved weights.

    Returns
    -------
    Path
        ``directory``.
    """
    shape = shape or LlavaShape()
    tokenizer = word_tokenizer(texts)
    image_id = int(tokenizer.convert_tokens_to_ids("<image>"))  # type: ignore[arg-type]
    ids = TokenIds(
        int(tokenizer.pad_token_id),  # type: ignore[arg-type]
        int(tokenizer.bos_token_id),  # type: ignore[arg-type]
        int(tokenizer.eos_token_id),  # type: ignore[arg-type]
        image_id,
    )
    config = llava_config(shape, vocab_size=len(tokenizer), token_ids=ids)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    nn.Module.to(model, dtype)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": shape.image_size},
        crop_size={"height": shape.image_size, "width": shape.image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=shape.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(directory)
    return directory
