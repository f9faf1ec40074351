"""Layer shapes of a LLaVA and the one place its ``LlavaConfig`` is written.

Both randomly initialised LLaVAs of the project build their config here: the tiny
CPU default (:mod:`fcit_flower.models.tiny`) and the checkpoints written for tests
and the GPU smoke script (:mod:`fcit_flower.models.llava_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig


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


class TokenIds(NamedTuple):
    """Ids of the special tokens a LLaVA config names."""

    pad: int
    bos: int
    eos: int
    image: int


def llava_config(
    shape: LlavaShape,
    *,
    vocab_size: int,
    token_ids: TokenIds,
    vision_mlp_ratio: int = 4,
    max_positions: int = 2048,
    vision_feature_layer: int = -2,
) -> LlavaConfig:
    """A CLIP vision tower, a Llama language model and LLaVA's MLP projector.

    Parameters
    ----------
    shape : LlavaShape
        Widths, depths and heads of both towers; image and patch size.
    vocab_size : int
        Tokenizer size, special tokens included.
    token_ids : TokenIds
        Ids of the padding, begin, end and ``<image>`` tokens.
    vision_mlp_ratio : int
        Vision MLP width over vision width (CLIP: 4).
    max_positions : int
        Longest sequence of the language model.
    vision_feature_layer : int
        Vision layer whose features are projected (LLaVA-1.5: the penultimate).

    Returns
    -------
    LlavaConfig
        The config of an untied, GELU-projector LLaVA.
    """
    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=vision_mlp_ratio * shape.vision_hidden,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        projection_dim=shape.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.text_hidden,
        intermediate_size=shape.text_intermediate,
        num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_heads,
        max_position_embeddings=max_positions,
        pad_token_id=token_ids.pad,
        bos_token_id=token_ids.bos,
        eos_token_id=token_ids.eos,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=token_ids.image,
        vision_feature_select_strategy="default",
        vision_feature_layer=vision_feature_layer,
        projector_hidden_act="gelu",
    )
