"""Write a randomly initialised LLaVA checkpoint directory, offline.

For tests and the GPU smoke script: a real ``LlavaForConditionalGeneration`` at any
shape (tiny for CPU tests, LLaVA-1.5-7B's layer shapes with few layers for GPU
memory checks), saved with a ``LlavaProcessor`` (a word-level tokenizer trained with
``tokenizers`` + a ``CLIPImageProcessor``), so that it loads through the same
``model-path`` code as a downloaded ``llava-hf/llava-1.5-7b-hf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from torch import nn
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
#: CLIP's pixel statistics (the processor of LLaVA-1.5).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class LlavaShape:
    """Layer shapes of a LLaVA checkpoint (defaults: tiny, for CPU tests).

    LLaVA-1.5-7B: ``text_hidden=4096, text_intermediate=11008, text_layers=32,
    text_heads=32, vision_hidden=1024, vision_layers=24, image_size=336,
    patch_size=14``.
    """

    text_hidden: int = 64
    text_intermediate: int = 128
    text_layers: int = 2
    text_heads: int = 4
    vision_hidden: int = 32
    vision_layers: int = 1
    vision_heads: int = 4
    image_size: int = 32
    patch_size: int = 8


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
    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=4 * shape.vision_hidden,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        projection_dim=shape.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.text_hidden,
        intermediate_size=shape.text_intermediate,
        num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_heads,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,  # LLaVA-1.5: the penultimate layer
        projector_hidden_act="gelu",
    )
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
