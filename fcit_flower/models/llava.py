"""The real-model path: a LLaVA checkpoint from a local directory, optionally QLoRA.

Sibling of :mod:`fcit_flower.models.tiny`. :func:`load_llava` loads any
LLaVA-architecture checkpoint (``llava-hf/llava-1.5-7b-hf`` layout:
``LlavaForConditionalGeneration`` + ``LlavaProcessor``) from ``model-path`` without
the hub. With ``quantization = "4bit"`` the language model's linear layers become
bitsandbytes NF4 layers (double quantization, bf16 compute), the vision tower, the
projector and the LM head stay unquantized, and the model is prepared for k-bit
training (PEFT ``prepare_model_for_kbit_training``). LoRA then goes on the language
model's MLP projections only (:func:`fcit_flower.models.adapters.lora_config`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Modules kept out of quantization (regexes, matched from the module path's start).
SKIP_QUANTIZATION = (".*vision_tower", ".*multi_modal_projector", "lm_head")
DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class LoadOptions:
    """How a base model is loaded (hashable: it keys the per-process cache).

    Attributes
    ----------
    model : str
        ``"tiny"`` or a LLaVA checkpoint kind (``"llava"``, ``"llava-1.5-7b"``).
    quantization : str
        ``"none"``, ``"4bit"`` (NF4, double quantization) or ``"8bit"``.
    torch_dtype : str
        Dtype of the unquantized weights and the 4-bit compute dtype.
    gradient_checkpointing : bool
        Recompute activations in the backward pass (less memory, ~30% slower).
    device : str
        ``"cpu"`` or ``"cuda"`` (the GPU Ray assigned to this process).
    """

    model: str = "tiny"
    quantization: str = "none"
    torch_dtype: str = "float32"
    gradient_checkpointing: bool = False
    device: str = "cpu"

    @classmethod
    def from_config(cls, config: Any) -> LoadOptions:
        """The load options of a :class:`~fcit_flower.config.RunConfig`."""
        return cls(
            model=config.model,
            quantization=config.quantization,
            torch_dtype=config.torch_dtype,
            gradient_checkpointing=config.gradient_checkpointing,
            device=config.device,
        )


class HFPromptTokenizer:
    """A transformers tokenizer behind the interface of the tiny ``WordTokenizer``.

    The prompt is LLaVA-1.5's (Vicuna v1): ``<s> USER: <image>... question
    ASSISTANT: answer</s>``.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        The checkpoint's tokenizer (from its processor).
    image_token : str
        The image placeholder token.
    """

    user_tag = "USER:"
    assistant_tag = "ASSISTANT:"

    def __init__(self, tokenizer: Any, image_token: str = "<image>") -> None:
        self.backend = tokenizer
        image_id = tokenizer.convert_tokens_to_ids(image_token)
        if image_id is None or image_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer lacks the image token {image_token!r}")
        self.image_id = int(image_id)
        self.eos_id = int(tokenizer.eos_token_id)
        self.bos_id = int(
            tokenizer.bos_token_id
            if tokenizer.bos_token_id is not None
            else self.eos_id
        )
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_id)
        self.unk_id = int(
            tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
        )

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return len(self.backend)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens."""
        return list(self.backend(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens dropped."""
        return str(self.backend.decode(list(ids), skip_special_tokens=True)).strip()


@dataclass(frozen=True)
class LlavaParts:
    """What :func:`load_llava` returns (the base bundle's ingredients)."""

    model: nn.Module
    tokenizer: HFPromptTokenizer
    image_size: int
    num_image_tokens: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]


def quantization_config(quantization: str, torch_dtype: str) -> Any:
    """The bitsandbytes config of ``quantization`` (``None`` for ``"none"``).

    4-bit is QLoRA's NF4 with double quantization and ``torch_dtype`` compute
    (use ``bfloat16``); the vision tower, projector and LM head are skipped.
    """
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=DTYPES[torch_dtype],
            llm_int8_skip_modules=list(SKIP_QUANTIZATION),
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_skip_modules=list(SKIP_QUANTIZATION)
        )
    raise ValueError(f"unknown quantization {quantization!r}")


def load_llava(path: str, options: LoadOptions) -> LlavaParts:
    """Load a LLaVA checkpoint and its processor from the local directory ``path``.

    The base is frozen; with quantization it is prepared for k-bit training (norms in
    float32, input gradients enabled, optional gradient checkpointing).

    Raises
    ------
    ValueError
        If ``path`` holds no LLaVA checkpoint or no processor (tokenizer + image
        processor).
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    directory = Path(path).expanduser()
    try:
        processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(
            f"model-path={path!r}: no usable processor (tokenizer + image "
            f"processor): {error}"
        ) from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise ValueError(f"model-path={path!r}: the processor is not a LlavaProcessor")
    kwargs: dict[str, Any] = {"dtype": DTYPES[options.torch_dtype]}
    quant = quantization_config(options.quantization, options.torch_dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if options.device == "cuda":
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = LlavaForConditionalGeneration.from_pretrained(
        directory, local_files_only=True, **kwargs
    )
    for param in model.parameters():
        param.requires_grad_(False)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=options.gradient_checkpointing
        )
    elif options.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if options.gradient_checkpointing:  # the KV cache is off while checkpointing
        for config in (model.config, getattr(model.config, "text_config", None)):
            if config is not None:
                config.use_cache = False
    model.eval()
    vision: Any = model.config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2
    if model.config.vision_feature_select_strategy == "full":
        tokens += 1  # the CLS token is kept
    image_processor = processor.image_processor
    tokenizer = HFPromptTokenizer(
        processor.tokenizer, getattr(processor, "image_token", "<image>")
    )
    return LlavaParts(
        model=model,
        tokenizer=tokenizer,
        image_size=int(vision.image_size),
        num_image_tokens=tokens,
        image_mean=_triple(image_processor.image_mean),
        image_std=_triple(image_processor.image_std),
    )


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    first, second, third = (float(v) for v in values)
    return first, second, third


def restore_4bit_training_layout(model: nn.Module) -> int:
    """Undo bitsandbytes' CPU inference packing of 4-bit weights before training.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a ``Linear4bit`` weight at
    its first no-grad forward in eval mode (a faster inference layout), and keeps
    it. A later backward through the packed weight yields no input gradient, which
    silently corrupts the LoRA gradients of all earlier layers. Call this after
    every evaluation, before training; it is a no-op on GPUs and unpacked layers.

    Returns
    -------
    int
        Number of layers restored.
    """
    if "bitsandbytes" not in sys.modules:  # never imported: no 4-bit layer exists
        return 0
    import bitsandbytes as bnb
    from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse

    restored = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        weight: Any = module.weight
        state = weight.quant_state
        if getattr(state, "packing_format_for_cpu", False):
            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                weight.data, state
            )
            restored += 1
    return restored
