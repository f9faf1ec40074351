"""What the tiny base perceives: its zero-shot score on its own pre-training families.

Draws ``--items`` fresh examples of every stage-2 question family (a seed the base's
corpus never used) and greedy-decodes the base without any adapter; the score is
normalized exact match. A family the base answers poorly here names a skill
mini-FCIT's tasks cannot build on with a frozen vision tower (for example reading
digits or words at 32 x 32 pixels).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import mean, record_rows, table_header
from fcit_flower.models.tiny import ensure_tiny_base, load_tiny_base, tiny_base_spec
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.tasks.metrics import exact_match
from fcit_flower.tasks.mini_fcit.pretrain import FAMILIES
from fcit_flower.training import generate_answers

PROBE_SEED = 12345  # not a corpus seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    # One thread, as a simulated client evaluates: outputs depend on the thread count.
    torch.set_num_threads(1)
    model, tokenizer = load_tiny_base(ensure_tiny_base())
    spec = tiny_base_spec()
    rng = np.random.default_rng(PROBE_SEED)
    rows = table_header("family", "base exact match", "example: answer -> output")
    families = dict.fromkeys(FAMILIES)  # stage 2 repeats `description`
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            samples = []
            for index in range(args.items):
                pixels, question, answer = family(rng, spec.image_size)
                path = Path(tmp) / f"{family.__name__}-{index}.png"
                Image.fromarray(pixels).save(path)
                samples.append(
                    Sample(id=str(index), image=path, question=question, answer=answer)
                )
            outputs = generate_answers(
                model,
                tokenizer,
                samples,
                image_size=spec.image_size,
                num_image_tokens=spec.num_image_tokens,
                max_new_tokens=16,
            )
            scores = [
                exact_match(o, s.answer) for o, s in zip(outputs, samples, strict=True)
            ]
            rows.append(
                f"| {family.__name__} | {100 * mean(scores):.1f} | "
                f"{samples[0].answer!r} -> {outputs[0]!r} |"
            )
            print(rows[-1], flush=True)
    title = f"What the tiny base perceives ({args.items} fresh items per family)"
    record_rows(title, rows, enabled=not args.no_record)


if __name__ == "__main__":
    main()
