"""Answer questions with an exported PEFT adapter using transformers + peft only.

Run in a fresh process by ``tests/test_export.py``; it never imports fcit_flower
(checked at the end), so it shows that an export is usable without the package:
everything it needs comes from the export folder (``export.json``: prompt format;
``base/``: the tiny base and its ``tokenizer.json``).

Usage: ``python stock_peft_inference.py EXPORT_DIR QUESTIONS_JSON``, where the JSON
maps a task to a list of ``{"image": path, "question": text}``; prints a JSON map
task -> answers.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from PIL import Image
from tokenizers import Tokenizer
from transformers import LlavaForConditionalGeneration

BATCH = 64  # as the run's evaluation batches


def pixels(paths, size, mean, std):
    rows = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            rows.append(np.asarray(rgb, dtype=np.uint8))
    if list(mean) == [0.5] * 3 and list(std) == [0.5] * 3:
        # [-1, 1] as the tiny base was trained: x / 127.5 - 1
        tensors = [
            torch.tensor(r, dtype=torch.float32).div_(127.5).sub_(1.0).permute(2, 0, 1)
            for r in rows
        ]
        return torch.stack(tensors)
    batch = torch.from_numpy(np.stack(rows)).permute(0, 3, 1, 2).float() / 255.0
    shift = torch.tensor(mean).view(1, 3, 1, 1)
    return (batch - shift) / torch.tensor(std).view(1, 3, 1, 1)


def main():
    folder, questions = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    info = json.loads((folder / "export.json").read_text())
    prompt = info["prompt"]
    ids = prompt["ids"]
    tokenizer = Tokenizer.from_file(str(folder / "base" / "tokenizer.json"))

    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False).ids

    base = LlavaForConditionalGeneration.from_pretrained(
        folder / "base", dtype=torch.float32
    )
    model = PeftModel.from_pretrained(base, folder)
    model.eval()
    answers = {}
    for task, items in questions.items():
        out = []
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            rows = [
                [ids["bos"]]
                + encode(prompt["user_tag"])
                + [ids["image"]] * prompt["num_image_tokens"]
                + encode(item["question"])
                + encode(prompt["assistant_tag"])
                for item in batch
            ]
            width = max(len(r) for r in rows)
            input_ids = torch.full((len(rows), width), ids["pad"], dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):  # left padding
                input_ids[i, width - len(row) :] = torch.tensor(row)
                mask[i, width - len(row) :] = 1
            with torch.no_grad():
                generated = model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    pixel_values=pixels(
                        [item["image"] for item in batch],
                        prompt["image_size"],
                        prompt["image_mean"],
                        prompt["image_std"],
                    ),
                    max_new_tokens=prompt["max_new_tokens"],
                    do_sample=False,
                    eos_token_id=ids["eos"],
                    pad_token_id=ids["pad"],
                )
            out.extend(
                tokenizer.decode(row[width:].tolist(), skip_special_tokens=True).strip()
                for row in generated
            )
        answers[task] = out
    assert not [m for m in sys.modules if m.startswith("fcit_flower")]
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
