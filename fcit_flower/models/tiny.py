"""The embedded CPU default: a tiny LLaVA-architecture model and its BPE tokenizer.

The model is a real ``transformers.LlavaForConditionalGeneration`` (CLIP vision tower,
two-layer MLP projector, Llama language model) built from a small config. Its *base*
is trained once, deterministically, to follow instructions on data that is not
mini-FCIT's (:mod:`fcit_flower.tasks.mini_fcit.pretrain`), then cached on disk. The
tokenizer is byte-level BPE trained on that pre-training text only, so the base
never depends on the data it is later run on: any FCIT-format text encodes.
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
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import LlavaConfig, LlavaForConditionalGeneration

from fcit_flower.cache import default_cache_dir
from fcit_flower.cpu_kernels import base_kernel_settings
from fcit_flower.filemode import follow_umask
from fcit_flower.heartbeat import Clock, Heartbeat
from fcit_flower.models.llava_shape import LlavaShape, TokenIds, llava_config
from fcit_flower.models.tiny_spec import TinyModelSpec, tiny_base_spec
from fcit_flower.prompting import encode_for_training
from fcit_flower.tasks.mini_fcit.pretrain import (
    CORPUS_VERSION,
    base_corpus,
    pretraining_texts,
)
from fcit_flower.threads import pinned_threads

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK, IMAGE = "[PAD]", "[BOS]", "[EOS]", "[UNK]", "<image>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, IMAGE]
BASE_VERSION = "tiny-base-v8"
# Pre-training runs on this many torch threads whatever the machine: CPU kernels
# split their sums by thread, so 1 and 2 threads give different bases (and every
# number after them). 2 is the smallest count the benchmark's machines have.
PRETRAIN_THREADS = 2


def _special_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"tokenizer lacks the special token {token!r}")
    return int(token_id)


class BpeTokenizer:
    """Lower-cased byte-level BPE (HF ``tokenizers``), trained offline.

    Every byte has a token, so any text encodes; merges come from the base's
    pre-training text only.

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        The trained tokenizer; special tokens take ids 0-4.
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
    def train(cls, texts: Iterable[str], vocab_size: int) -> BpeTokenizer:
        """Learn ``vocab_size`` byte-level BPE tokens from ``texts``."""
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Lowercase()]
        )
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(list(texts), trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: Path) -> BpeTokenizer:
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
        """Text of ``ids``, special tokens dropped, outer whitespace stripped."""
        return str(self.backend.decode(list(ids), skip_special_tokens=True)).strip()


def build_config(spec: TinyModelSpec, vocab_size: int) -> LlavaConfig:
    """Return the ``LlavaConfig`` of the tiny model.

    Unlike LLaVA-1.5: a vision MLP twice (not 4x) as wide, 512 positions, and the
    last vision layer's features.
    """
    shape = LlavaShape(
        text_hidden=spec.text_hidden,
        text_intermediate=spec.text_intermediate,
        text_layers=spec.text_layers,
        text_heads=spec.heads,
        vision_hidden=spec.vision_hidden,
        vision_layers=spec.vision_layers,
        vision_heads=spec.heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )
    ids = TokenIds(*(SPECIAL_TOKENS.index(t) for t in (PAD, BOS, EOS, IMAGE)))
    config = llava_config(
        shape,
        vocab_size=vocab_size,
        token_ids=ids,
        vision_mlp_ratio=2,
        max_positions=512,
        vision_feature_layer=-1,
    )
    config.pad_token_id = ids.pad
    return config


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """Map an ``(H, W, 3)`` uint8 image to the tiny model's normalised CHW tensor."""
    array = torch.tensor(image, dtype=torch.float32).div_(127.5).sub_(1.0)
    return array.permute(2, 0, 1)


def base_fingerprint(spec: TinyModelSpec) -> str:
    """Hash of everything the cached base depends on (nothing of the run's data)."""
    payload = json.dumps(
        {
            "version": BASE_VERSION,
            "corpus": CORPUS_VERSION,
            "spec": asdict(spec),
            "threads": PRETRAIN_THREADS,
            "kernels": base_kernel_settings(),  # another kernel path, another base
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def built_tiny_base(
    spec: TinyModelSpec | None = None, *, cache_dir: Path | None = None
) -> Path | None:
    """The directory of the tiny base if it is built already (never builds it)."""
    spec = spec or tiny_base_spec()
    root = cache_dir or default_cache_dir()
    target = root / f"{BASE_VERSION}-{base_fingerprint(spec)}"
    return target if (target / "tokenizer.json").exists() else None


def ensure_tiny_base(
    spec: TinyModelSpec | None = None, *, cache_dir: Path | None = None
) -> Path:
    """Build (once) and return the directory of the pre-trained tiny base.

    Concurrent callers (simulated clients) wait on a file lock; the directory appears
    atomically (built in a temp directory, then renamed).

    Parameters
    ----------
    spec : TinyModelSpec, optional
        Model shape and pre-training budget; :func:`tiny_base_spec` by default.
    cache_dir : Path, optional
        Cache root; defaults to :func:`default_cache_dir`.

    Returns
    -------
    Path
        Directory with ``config.json``, weights, ``spec.json`` and
        ``tokenizer.json``.
    """
    spec = spec or tiny_base_spec()
    root = cache_dir or default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{BASE_VERSION}-{base_fingerprint(spec)}"
    if (target / "tokenizer.json").exists():
        return target
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "tokenizer.json").exists():
            return target
        log.info("pre-training the base (once, cached in %s)", target)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
        follow_umask(staging)  # mkdtemp makes it 0700; the cache is shared
        try:
            from fcit_flower.models.base_build import build_base_files

            build_base_files(spec, staging)  # a child process: the base's kernels
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def save_base(
    model: LlavaForConditionalGeneration,
    tokenizer: BpeTokenizer,
    spec: TinyModelSpec,
    folder: Path,
) -> None:
    """Write a pre-trained base; ``tokenizer.json`` last (it marks a finished base)."""
    model.save_pretrained(folder)
    (folder / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    tokenizer.save(folder / "tokenizer.json")


def load_tiny_base(path: Path) -> tuple[LlavaForConditionalGeneration, BpeTokenizer]:
    """Load a base written by :func:`ensure_tiny_base` (eval mode, float32)."""
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    model.eval()
    return model, BpeTokenizer.load(path / "tokenizer.json")


def pretrain_base(
    spec: TinyModelSpec,
) -> tuple[LlavaForConditionalGeneration, BpeTokenizer]:
    """Train the tokenizer, then the whole model in two stages (as LLaVA does).

    Stage 1 aligns vision and language on descriptions of every picture kind;
    stage 2 tunes on the instruction families. Both train every weight.
    """
    alignment, instructions = base_corpus(
        seed=spec.seed,
        size=spec.image_size,
        alignment=spec.alignment_examples,
        instructions=spec.pretrain_examples,
    )
    tokenizer = BpeTokenizer.train(
        [*pretraining_texts(alignment, instructions), "user: assistant:"],
        spec.vocab_size,
    )
    # Drawing the corpus and training the tokenizer take a while: say when done.
    sizes = (len(alignment), len(instructions), tokenizer.vocab_size)
    log.info("pre-training corpus ready: %d + %d pictures, %d tokens", *sizes)
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(build_config(spec, tokenizer.vocab_size))
    model.train()
    rng = np.random.default_rng(spec.seed + 1)
    progress = _Progress(spec.alignment_steps + spec.pretrain_steps)
    with pinned_threads(PRETRAIN_THREADS):  # the same base on every machine
        for corpus, steps in (
            (alignment, spec.alignment_steps),
            (instructions, spec.pretrain_steps),
        ):
            _train_stage(model, tokenizer, corpus, steps, spec, rng, progress)
    model.eval()
    return model, tokenizer


class _Progress:
    """Logs done/total steps, loss, elapsed and ETA at least every 20 s."""

    def __init__(self, total: int, *, clock: Clock | None = None) -> None:
        self.total, self.done = total, 0
        self.beat = Heartbeat(interval_s=20.0, clock=clock)

    def step(self, loss: float) -> None:
        self.done += 1
        self.beat.advance(done=self.done, total=self.total)
        if self.beat.due() or self.done == self.total:
            log.info("%s, loss %.3f", self.beat.line("base pre-training steps"), loss)


def _train_stage(
    model: LlavaForConditionalGeneration,
    tokenizer: BpeTokenizer,
    corpus: list[tuple[np.ndarray, str, str]],
    steps: int,
    spec: TinyModelSpec,
    rng: np.random.Generator,
    progress: _Progress,
) -> None:
    """One pre-training stage: AdamW, linear warm-up, cosine decay, clipping."""
    pixels = torch.stack([image_to_tensor(p) for p, _, _ in corpus])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.pretrain_lr, weight_decay=0.0
    )
    warmup = max(1, steps // 30)
    for step in range(steps):
        lr_scale = 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = spec.pretrain_lr * min(1.0, (step + 1) / warmup) * lr_scale
        picks = rng.integers(0, len(corpus), spec.pretrain_batch)
        batch = encode_for_training(
            tokenizer,
            [corpus[i][1] for i in picks],
            [corpus[i][2] for i in picks],
            pixels[torch.from_numpy(picks)],
            spec.num_image_tokens,
        )
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        progress.step(loss.item())
