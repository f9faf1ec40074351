"""Is each mini-FCIT task learnable by a LoRA on the frozen tiny base?

For every task: draw its train items (the benchmark's generator and phrasings, a
seed the benchmark's splits do not use) and fresh held-out val items, train one
rank-``lora-rank`` LoRA on that task alone (the default lr, scaling and batch) and
score the val items before and after, next to the chance and majority-class rates.
A task whose single-task score stays near its majority rate cannot be learned at
this scale, whatever the continual method; such a task must be re-specified.
"""

from __future__ import annotations

import argparse
import collections
import copy
import itertools
import os
import tempfile
import time
from pathlib import Path

import torch
from peft import get_peft_model
from PIL import Image

from bench.common import record_rows, table_header
from fcit_flower.config import RunConfig
from fcit_flower.models.adapters import lora_config, lora_parameters
from fcit_flower.models.tiny import ensure_tiny_base, load_tiny_base, tiny_base_spec
from fcit_flower.models.tiny_spec import TINY_BASE_ENV
from fcit_flower.tasks.catalog import TASK_ORDER, TASKS
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.tasks.metrics import score
from fcit_flower.tasks.mini_fcit import _draw_split
from fcit_flower.tasks.mini_fcit.tasks import TASK_SPECS
from fcit_flower.training import generate_answers, train_local

PROBE_SEED = 777  # not a seed of the benchmark's splits


def _samples(
    task: str, split: str, count: int, size: int, folder: Path, seed: int
) -> list[Sample]:
    """Items of one split; a held-out phrasing's item id ends in ``-heldout``."""
    records, images, _ = _draw_split(task, split, count, seed, size, set())
    samples = []
    for index, (record, pixels) in enumerate(zip(records, images, strict=True)):
        path = folder / f"{task}-{seed}-{split}-{index}.png"
        Image.fromarray(pixels).save(path)
        samples.append(
            Sample(
                id=f"{task}-{split}-{index}-{record['phrasing']}",
                image=path,
                question=record["question"],
                answer=record["answer"],
            )
        )
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default=",".join(TASK_ORDER))
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--seeds",
        default=str(PROBE_SEED),
        help="probe seeds (data and LoRA init), comma-separated: one row each",
    )
    parser.add_argument(
        "--pooled",
        action="store_true",
        help="one LoRA on every listed task's train items together (a small MTL)",
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    # One thread, as a simulated client trains: scores depend on the thread count.
    torch.set_num_threads(1)
    config = RunConfig()
    spec = tiny_base_spec()
    base, tokenizer = load_tiny_base(ensure_tiny_base())
    for param in base.parameters():
        param.requires_grad_(False)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = table_header(
        "task",
        "probe seed",
        "chance",
        "majority (val)",
        "zero-shot (val)",
        "trained (val)",
        "trained, held-out phrasings",
        "s",
    )
    size, tokens = spec.image_size, spec.num_image_tokens
    tasks = args.tasks.split(",")
    # One group of tasks per LoRA: each task alone, or all of them pooled.
    groups = [tasks] if args.pooled else [[task] for task in tasks]
    with tempfile.TemporaryDirectory() as tmp:
        for group, seed in itertools.product(groups, seeds):
            start = time.perf_counter()
            train = [
                sample
                for task in group
                for sample in _samples(task, "train", args.train, size, Path(tmp), seed)
            ]
            vals = {
                task: _samples(task, "val", args.val, size, Path(tmp), seed)
                for task in group
            }
            zero = {
                task: generate_answers(
                    base, tokenizer, val, image_size=size, num_image_tokens=tokens
                )
                for task, val in vals.items()
            }
            rank = config.lora_rank
            # PEFT draws lora_A from the global generator: seed it per LoRA, so a
            # task's score does not depend on which tasks ran before it.
            torch.manual_seed(seed)
            model = get_peft_model(
                copy.deepcopy(base),
                lora_config(rank, config.scaling(rank), config.lora_dropout),
            )
            lora = list(lora_parameters(model).values())
            train_local(
                model,
                tokenizer,
                train,
                param_groups=[{"params": lora, "lr": config.lr}],
                epochs=args.epochs,
                batch_size=config.batch_size,
                warmup_ratio=config.warmup_ratio,
                seed=0,
                image_size=size,
                num_image_tokens=tokens,
            )
            seconds = time.perf_counter() - start
            for task, val in vals.items():
                metric = TASKS[task].metric
                answers = [s.answer for s in val]
                majority = collections.Counter(answers).most_common(1)[0][0]
                outputs = generate_answers(
                    model, tokenizer, val, image_size=size, num_image_tokens=tokens
                )
                heldout = [
                    (output, sample.answer)
                    for output, sample in zip(outputs, val, strict=True)
                    if sample.id.endswith("-heldout")
                ]
                unseen = (
                    score(metric, *map(list, zip(*heldout, strict=True)))
                    if heldout
                    else float("nan")
                )
                rows.append(
                    f"| {task} | {seed} | {TASK_SPECS[task].chance:.1f} | "
                    f"{score(metric, [majority] * len(val), answers):.1f} | "
                    f"{score(metric, zero[task], answers):.1f} | "
                    f"{score(metric, outputs, answers):.1f} | {unseen:.1f} | "
                    f"{seconds:.0f} |"
                )
                common = collections.Counter(outputs).most_common(4)
                print(rows[-1], "most common outputs:", common, flush=True)
    kind = "Pooled (one LoRA, all tasks)" if args.pooled else "Single-task"
    base_name = os.environ.get(TINY_BASE_ENV, "standard")  # from $FCIT_TINY_BASE
    title = (
        f"{kind} learnability, {base_name} base "
        f"({args.train} train items, {args.epochs} epochs)"
    )
    record_rows(title, rows, enabled=not args.no_record)


if __name__ == "__main__":
    main()
