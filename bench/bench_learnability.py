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
    records, images, _ = _draw_split(task, split, count, seed, size, set())
    samples = []
    for index, (record, pixels) in enumerate(zip(records, images, strict=True)):
        path = folder / f"{task}-{seed}-{split}-{index}.png"
        Image.fromarray(pixels).save(path)
        samples.append(
            Sample(
                id=f"{task}-{split}-{index}",
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
        "s",
    )
    size, tokens = spec.image_size, spec.num_image_tokens
    with tempfile.TemporaryDirectory() as tmp:
        for task, seed in itertools.product(args.tasks.split(","), seeds):
            start = time.perf_counter()
            train = _samples(task, "train", args.train, size, Path(tmp), seed)
            val = _samples(task, "val", args.val, size, Path(tmp), seed)
            metric = TASKS[task].metric
            answers = [s.answer for s in val]
            majority = collections.Counter(answers).most_common(1)[0][0]
            majority_score = score(metric, [majority] * len(val), answers)
            outputs = generate_answers(
                base, tokenizer, val, image_size=size, num_image_tokens=tokens
            )
            zero = score(metric, outputs, answers)
            rank = config.lora_rank
            # PEFT draws lora_A from the global generator: seed it per task, so a
            # task's score does not depend on which tasks ran before it.
            torch.manual_seed(seed)
            model = get_peft_model(
                copy.deepcopy(base),
                lora_config(rank, config.scaling(rank), config.lora_dropout),
            )
            lora = list(lora_parameters(model).values())
            groups = [{"params": lora, "lr": config.lr}]
            train_local(
                model,
                tokenizer,
                train,
                param_groups=groups,
                epochs=args.epochs,
                batch_size=config.batch_size,
                warmup_ratio=config.warmup_ratio,
                seed=0,
                image_size=size,
                num_image_tokens=tokens,
            )
            outputs = generate_answers(
                model, tokenizer, val, image_size=size, num_image_tokens=tokens
            )
            trained = score(metric, outputs, answers)
            rows.append(
                f"| {task} | {seed} | {TASK_SPECS[task].chance:.1f} | "
                f"{majority_score:.1f} | {zero:.1f} | {trained:.1f} | "
                f"{time.perf_counter() - start:.0f} |"
            )
            example = f"{val[0].answer!r} -> {outputs[0]!r}"
            print(rows[-1], "e.g.", example, flush=True)
    title = f"Single-task learnability ({args.train} train items, {args.epochs} epochs)"
    record_rows(title, rows, enabled=not args.no_record)


if __name__ == "__main__":
    main()
