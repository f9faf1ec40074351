"""Training whose result must not depend on the machine runs on pinned threads:
the tiny base's pre-training and the ServerApp's centralized MTL training."""

from dataclasses import replace

import torch

from fcit_flower import threads
from fcit_flower.methods import mtl
from fcit_flower.models import tiny, tiny_spec


def test_pretraining_runs_on_a_fixed_thread_count_and_restores_the_callers(
    monkeypatch,
):
    seen = []
    monkeypatch.setattr(
        tiny, "_train_stage", lambda *args: seen.append(torch.get_num_threads())
    )
    spec = replace(
        tiny_spec.TINY_BASES["smoke"], alignment_examples=40, pretrain_examples=40
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
    spec = tiny_spec.TINY_BASES["smoke"]
    pinned = tiny.base_fingerprint(spec)
    monkeypatch.setattr(tiny, "PRETRAIN_THREADS", tiny.PRETRAIN_THREADS + 1)
    assert tiny.base_fingerprint(spec) != pinned


def test_pinned_threads_restores_the_callers_count_after_an_error():
    before = torch.get_num_threads()
    try:
        with threads.pinned_threads(before + 1):
            assert torch.get_num_threads() == before + 1
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before


def test_central_mtl_training_runs_on_the_servers_thread_count(monkeypatch):
    seen = []

    def train_adapter(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return 0.0

    monkeypatch.setattr(mtl, "train_adapter", train_adapter)
    monkeypatch.setattr(mtl, "peft_model", lambda *args: None)
    monkeypatch.setattr(mtl, "peft_update", lambda model, projector: {})
    monkeypatch.setattr(mtl, "config_load_task", lambda *args: [])

    class Runtime:
        class schedule:  # noqa: N801 - stands in for the run's schedule
            tasks = ("imagenet-r",)

        root = bundle = None

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the in-process benchmark
    try:
        method = mtl.MultiTask()
        config = mtl.RunConfig()
        assert method.central_training(config, Runtime(), {}, stage=0) == {}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert seen == [threads.SERVER_TRAINING_THREADS]
