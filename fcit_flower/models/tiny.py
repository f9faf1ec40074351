"""The embedded CPU default: a tiny LLaVA-architecture model and its word tokenizer.

The model is a real ``transformers.LlavaForConditionalGeneration`` (CLIP vision tower,
two-layer MLP projector, Llama language model) built from a small config. Its *base*
is pre-trained once, deterministically, on generic image captions whose images and
texts are disjoint from the mini-FCIT tasks (see
:mod:`fcit_flower.tasks.mini_fcit.pretrain`), then cached on disk. Zero-shot
accuracy on the benchmark is therefore low but not zero, and LoRA on the MLP
projections can learn each task.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from fcit_flower.cache import default_cache_dir
from fcit_flower.prompting import encode_for_training

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK, IMAGE = "[PAD]", "[BOS]", "[EOS]", "[UNK]", "<image>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, IMAGE]
BASE_VERSION = "tiny-base-v7"


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny LLaVA and of its pre-training run.

    Attributes
    ----------
    image_size, patch_size : int
        Vision tower input; ``(image_size / patch_size) ** 2`` image tokens.
    vision_hidden, text_hidden, text_intermediate : int
        Widths of the vision tower, the language model and its MLP.
    vision_layers, text_layers, heads : int
        Depths and attention heads.
    pretrain_steps, pretrain_batch, pretrain_lr : int, int, float
        Budget of the one-off base pre-training.
    seed : int
        Seed of initialisation and pre-training data.
    """

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 128
    text_intermediate: int = 256
    text_layers: int = 2
    heads: int = 4
    pretrain_steps: int = 1500
    pretrain_batch: int = 32
    pretrain_lr: float = 1e-3
    seed: int = 0

    @property
    def num_image_tokens(self) -> int:
        """Number of ``<image>`` placeholders per image (CLS token dropped)."""
        return (self.image_size // self.patch_size) ** 2


def _special_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"tokenizer lacks the special token {token!r}")
    return int(token_id)


class WordTokenizer:
    """Lower-cased word-level tokenizer (HF ``tokenizers``), trained offline.

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        The trained word-level tokenizer; special tokens take ids 0-4.
    """

    user_tag = "user:"
    assistant_tag = "assistant:"

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.backend = tokenizer
        self.pad_id = _special_id(tokenizer, PAD)
        self.bos_id = _special_id(tokenizer, BOS)
        self.eos_id = _special_id(tokenizer, EOS)
        self.unk_id = _special_id(tokenizer, UNK)
        self.image_id = _special_id(tokenizer, IMAGE)

    @classmethod
    def train(cls, texts: Iterable[str]) -> WordTokenizer:
        """Train a word-level vocabulary on ``texts`` (every word kept)."""
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(
            special_tokens=SPECIAL_TOKENS, min_frequency=1
        )
        tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: Path) -> WordTokenizer:
        """Load from a ``tokenizer.json`` file."""
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: Path) -> None:
        """Write ``tokenizer.json``."""
        self.backend.save(str(path))

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return int(self.backend.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens."""
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Words of ``ids`` joined by spaces, special tokens dropped."""
        return str(self.backend.decode(list(ids), skip_special_tokens=True))


def build_config(spec: TinyModelSpec, vocab_size: int) -> LlavaConfig:
    """Return the ``LlavaConfig`` of the tiny model."""
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=2 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=SPECIAL_TOKENS.index(IMAGE),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        pad_token_id=0,  # type: ignore[call-arg]  # accepted by transformers
    )


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """Map an ``(H, W, 3)`` uint8 image to the tiny model's normalised CHW tensor."""
    array = torch.tensor(image, dtype=torch.float32).div_(127.5).sub_(1.0)
    return array.permute(2, 0, 1)


def base_fingerprint(spec: TinyModelSpec, vocabulary_texts: Sequence[str]) -> str:
    """Hash of everything the cached base depends on."""
    payload = json.dumps(
        {
            "version": BASE_VERSION,
            "spec": asdict(spec),
            "texts": sorted(set(vocabulary_texts)),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def ensure_tiny_base(
    vocabulary_texts: Sequence[str],
    *,
    spec: TinyModelSpec | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Build (once) and return the directory of the pre-trained tiny base.

    Concurrent callers (simulated clients) wait on a file lock; the directory appears
    atomically (built in a temp directory, then renamed).

    Parameters
    ----------
    vocabulary_texts : Sequence[str]
        Every text the tokenizer must know (instructions and answers of the tasks).
    spec : TinyModelSpec, optional
        Model shape and pre-training budget.
    cache_dir : Path, optional
        Cache root; defaults to :func:`default_cache_dir`.

    Returns
    -------
    Path
        Directory with ``config.json``, weights and ``tokenizer.json``.
    """
    spec = spec or TinyModelSpec()
    root = cache_dir or default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{BASE_VERSION}-{base_fingerprint(spec, vocabulary_texts)}"
    if (target / "tokenizer.json").exists():
        return target
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "tokenizer.json").exists():
            return target
        log.info("Pre-training the tiny base once (cached at %s)", target)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
        try:
            model, tokenizer = _pretrain(spec, vocabulary_texts)
            model.save_pretrained(staging)
            (staging / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
            tokenizer.save(staging / "tokenizer.json")  # written last: the marker
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tiny_base(path: Path) -> tuple[LlavaForConditionalGeneration, WordTokenizer]:
    """Load a base written by :func:`ensure_tiny_base` (eval mode, float32)."""
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    model.eval()
    return model, WordTokenizer.load(path / "tokenizer.json")


def _pretrain(
    spec: TinyModelSpec, vocabulary_texts: Sequence[str]
) -> tuple[LlavaForConditionalGeneration, WordTokenizer]:
    from fcit_flower.tasks.mini_fcit.pretrain import pretraining_corpus

    corpus = pretraining_corpus(
        spec.pretrain_steps * spec.pretrain_batch // 4,
        seed=spec.seed,
        size=spec.image_size,
    )
    texts = [
        *vocabulary_texts,
        *(q for _, q, _ in corpus[:2000]),
        *(a for *_, a in corpus),
    ]
    tokenizer = WordTokenizer.train([*texts, "user: assistant:"])
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(build_config(spec, tokenizer.vocab_size))
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.pretrain_lr, weight_decay=0.0
    )
    rng = np.random.default_rng(spec.seed + 1)
    for step in range(spec.pretrain_steps):
        lr_scale = 0.5 * (1 + math.cos(math.pi * step / spec.pretrain_steps))
        for group in optimizer.param_groups:
            group["lr"] = spec.pretrain_lr * min(1.0, (step + 1) / 50) * lr_scale
        picks = rng.integers(0, len(corpus), spec.pretrain_batch)
        batch = encode_for_training(
            tokenizer,
            [corpus[i][1] for i in picks],
            [corpus[i][2] for i in picks],
            torch.stack([image_to_tensor(corpus[i][0]) for i in picks]),
            spec.num_image_tokens,
        )
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 250 == 0:
            log.info("base pre-training step %d loss %.3f", step, loss.item())
    model.eval()
    return model, tokenizer
