"""Prompt encoding of LLaVA-style models: what a tokenizer must offer, and batches.

Prompt format: ``[BOS] user: <image> x N <instruction> assistant:`` followed, in
training, by ``<answer> [EOS]``; the loss covers the answer only. Both the tiny word
tokenizer (:mod:`fcit_flower.models.tiny`) and a wrapped transformers tokenizer
(:mod:`fcit_flower.models.llava`) satisfy :class:`PromptTokenizer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

IGNORE_INDEX = -100


class PromptTokenizer(Protocol):
    """What prompt encoding needs of a tokenizer (tiny word-level or transformers)."""

    pad_id: int
    bos_id: int
    eos_id: int
    image_id: int
    user_tag: str
    assistant_tag: str

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` without special tokens."""
        ...


def prompt_ids(
    tokenizer: PromptTokenizer, question: str, num_image_tokens: int
) -> list[int]:
    """Ids of the prompt of ``question`` (image placeholders included)."""
    return [
        tokenizer.bos_id,
        *tokenizer.encode(tokenizer.user_tag),
        *([tokenizer.image_id] * num_image_tokens),
        *tokenizer.encode(question),
        *tokenizer.encode(tokenizer.assistant_tag),
    ]


def encode_for_training(
    tokenizer: PromptTokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    pixel_values: torch.Tensor,
    num_image_tokens: int,
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` and pixels."""
    rows, targets = [], []
    for question, answer in zip(questions, answers, strict=True):
        prompt = prompt_ids(tokenizer, question, num_image_tokens)
        reply = [*tokenizer.encode(answer), tokenizer.eos_id]
        rows.append(prompt + reply)
        targets.append([IGNORE_INDEX] * len(prompt) + reply)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, target) in enumerate(zip(rows, targets, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(target)
        mask[i, : len(row)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "labels": labels,
        "pixel_values": pixel_values,
    }


def encode_for_generation(
    tokenizer: PromptTokenizer,
    questions: Sequence[str],
    pixel_values: torch.Tensor,
    num_image_tokens: int,
) -> dict[str, torch.Tensor]:
    """Left-padded prompts for batched greedy decoding."""
    rows = [prompt_ids(tokenizer, q, num_image_tokens) for q in questions]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "pixel_values": pixel_values,
    }
