"""SSA overhead: E-subspace LoRA vs one LoRA of the same total rank (PEFT).

Forward+backward (training one subspace) and inference (per-example SSA weights), on
the tiny model's MLP shape and a LLaMA-7B MLP shape (4096 -> 11008). Ratios are
measured in one run, interleaved, median of repeats.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from bench.common import median_seconds, record_rows
from fcit_flower.models.subspace_lora import SubspaceLoraLinear

TITLE = "SSA overhead: E-subspace LoRA vs one PEFT LoRA of the same total rank"


class _Holder(nn.Module):
    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.up_proj = layer


def measure(
    in_f: int, out_f: int, rank: int, num: int, tokens: int, repeats: int
) -> dict:
    torch.manual_seed(0)
    base = nn.Linear(in_f, out_f)
    for p in base.parameters():
        p.requires_grad_(False)
    peft = get_peft_model(
        _Holder(base),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["up_proj"]),
    )
    plain = peft.base_model.model.up_proj
    multi = SubspaceLoraLinear(base, num_subspaces=num, rank=rank // num, scaling=2.0)
    x = torch.randn(4, tokens, in_f)
    train_w = torch.zeros(num)
    train_w[0] = 1.0
    infer_w = torch.softmax(torch.randn(4, num), dim=-1)

    def plain_step():
        plain(x).sum().backward()

    def multi_step():
        multi.set_activation(train_w)
        multi(x).sum().backward()

    def plain_infer():
        with torch.no_grad():
            plain(x)

    def multi_infer():
        multi.set_activation(infer_w)
        with torch.no_grad():
            multi(x)

    out = {}
    for name, a, b in (
        ("train", plain_step, multi_step),
        ("infer", plain_infer, multi_infer),
    ):
        ta, tb = [], []
        for _ in range(3):  # interleave to cancel drift
            ta.append(median_seconds(a, repeats, warm_up=True))
            tb.append(median_seconds(b, repeats, warm_up=True))
        out[name] = (statistics.median(ta), statistics.median(tb))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [
        "| shape | total rank | E | train plain ms | train E-subspace ms | ratio | "
        "infer plain ms | infer E-subspace ms | ratio |",
        "|---" * 9 + "|",
    ]
    for label, in_f, out_f, rank, tokens in (
        ("tiny MLP 128->256", 128, 256, 32, 40),
        ("7B MLP 4096->11008", 4096, 11008, 64, 32),
    ):
        for num in (1, 4, 8, 16):
            if rank % num:
                continue
            r = measure(in_f, out_f, rank, num, tokens, args.repeats)
            (tp, tm), (ip, im) = r["train"], r["infer"]
            rows.append(
                f"| {label} | {rank} | {num} | {tp * 1e3:.3f} | {tm * 1e3:.3f} | "
                f"{tm / tp:.2f}x | {ip * 1e3:.3f} | {im * 1e3:.3f} | {im / ip:.2f}x |"
            )
            print(rows[-1], flush=True)
    record_rows(TITLE, rows, enabled=not args.no_record)


if __name__ == "__main__":
    main()
