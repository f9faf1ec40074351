"""The tiny base is the same on every machine: pre-training pins its thread count."""

from dataclasses import replace

import torch

from fcit_flower.models import tiny


def test_pretraining_runs_on_a_fixed_thread_count_and_restores_the_callers(
    monkeypatch,
):
    seen = []
    monkeypatch.setattr(
        tiny, "_train_stage", lambda *args: seen.append(torch.get_num_threads())
    )
    spec = replace(
        tiny.TINY_BASES["smoke"], alignment_examples=40, pretrain_examples=40
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray actor with one CPU
    try:
        tiny.pretrain_base(spec)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert seen == [tiny.PRETRAIN_THREADS] * 2  # alignment, then instructions


def test_the_thread_count_is_part_of_the_base_fingerprint(monkeypatch):
    spec = tiny.TINY_BASES["smoke"]
    pinned = tiny.base_fingerprint(spec)
    monkeypatch.setattr(tiny, "PRETRAIN_THREADS", tiny.PRETRAIN_THREADS + 1)
    assert tiny.base_fingerprint(spec) != pinned
