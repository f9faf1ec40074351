"""Bytes per client per round, every method, float32 and bfloat16 transport.

Counts what Flower's ``ArrayRecord.count_bytes`` counts for the records that travel
(``.npy`` data and header, plus the keys), computed from the shapes so that
LLaVA-1.5-7B's (32 layers, 4096 -> 11008, LoRA on the MLP projections, r = 64,
E = 8, as in the paper) need no weights; at the tiny model's shapes the formula is
checked against real records built by :func:`fcit_flower.transport.encode_arrays`.
Each figure is the largest message of a run (8 stages): the bound a link must carry.
"""

from __future__ import annotations

import argparse
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bench.common import record_rows, table_header
from fcit_flower.protocol import ANCHOR_PREFIX, FISHER_PREFIX, block_prefix
from fcit_flower.transport import encode_arrays

TITLE = "Communication per client per round, every method, float32 vs bfloat16"
# The goal (issue 18): a DISCO client's message at 7B shapes in at most 25 MB.
DISCO_7B_LIMIT = 25e6
Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Model:
    """The LoRA-relevant shapes of a language model."""

    label: str
    layers: int
    hidden: int
    inter: int
    rank: int
    experts: int  # E: DISCO subspaces, O-/M-LoRA blocks, MoELoRA experts
    token_dim: int  # identity token (MiniLM 384, CLIP 768)

    def modules(self) -> Iterator[tuple[str, int, int]]:
        """(module path, fan in, fan out) of every LoRA-adapted projection."""
        shapes = {
            "gate_proj": (self.hidden, self.inter),
            "up_proj": (self.hidden, self.inter),
            "down_proj": (self.inter, self.hidden),
        }
        for layer in range(self.layers):
            for name, (fan_in, fan_out) in shapes.items():
                yield f"model.language_model.layers.{layer}.mlp.{name}", fan_in, fan_out


MODELS = (
    Model("tiny", 2, 128, 256, 32, 8, 384),
    Model("LLaVA-1.5-7B", 32, 4096, 11008, 64, 8, 768),
)


def lora(model: Model, rank: int, prefix: str = "") -> Shapes:
    """Keys and shapes of a rank-``rank`` LoRA on every adapted projection."""
    shapes = {}
    for key, fan_in, fan_out in model.modules():
        shapes[f"{prefix}{key}.lora_A.weight"] = (rank, fan_in)
        shapes[f"{prefix}{key}.lora_B.weight"] = (fan_out, rank)
    return shapes


def moe(model: Model) -> Shapes:
    """MoELoRA's experts (E of rank r/E) and routers."""
    rank, num = model.rank // model.experts, model.experts
    shapes = {}
    for key, fan_in, fan_out in model.modules():
        shapes[f"{key}.lora_A"] = (num, rank, fan_in)
        shapes[f"{key}.lora_B"] = (num, fan_out, rank)
        shapes[f"{key}.lora_router"] = (num, fan_in)
    return shapes


def messages(model: Model) -> dict[str, tuple[Shapes, Shapes, str]]:
    """Method -> (largest download, largest upload, what they are)."""
    full = lora(model, model.rank)
    sub = lora(model, model.rank // model.experts)
    blocks = {}
    for k in range(model.experts):
        blocks.update(lora(model, model.rank // model.experts, block_prefix(k)))
    fisher = {FISHER_PREFIX + k: v for k, v in full.items()}
    anchor = {ANCHOR_PREFIX + k: v for k, v in full.items()}
    return {
        "finetune": (full, full, "rank-r LoRA both ways"),
        "ewc": (
            {**full, **anchor, **fisher},
            {**full, **fisher},
            "from stage 2: + anchor + Fisher down; Fisher up in a stage's last round",
        ),
        "olora": (
            blocks,
            lora(model, model.rank // model.experts, block_prefix(0)),
            "stage k: k blocks of rank r/E down (max at stage E), one up",
        ),
        "mlora": (
            blocks,
            lora(model, model.rank // model.experts, block_prefix(0)),
            "as O-LoRA",
        ),
        "moelora": (moe(model), moe(model), "E experts of rank r/E + routers"),
        "disco": (sub, sub, "one rank-r/E subspace (+ an identity token once a stage)"),
        "mtl": ({}, {}, "trained in the ServerApp on pooled data: no messages"),
    }


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes of the ``.npy`` header ``np.save`` writes for this shape and dtype."""
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": shape,
    }
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return len(buffer.getvalue())


def record_bytes(shapes: Shapes, transport: str) -> int:
    """``count_bytes`` of the record carrying float32 arrays of these shapes."""
    dtype = np.dtype(np.uint16 if transport == "bfloat16" else np.float32)
    return sum(
        npy_header(shape, dtype) + math.prod(shape) * dtype.itemsize + len(key)
        for key, shape in shapes.items()
    )


def check_formula(model: Model) -> None:
    """The formula equals real encoded records (small shapes only)."""
    for down, _, _ in messages(model).values():
        arrays = {k: np.zeros(s, np.float32) for k, s in down.items()}
        for transport in ("float32", "bfloat16"):
            real = encode_arrays(arrays, transport=transport).count_bytes()
            assert real == record_bytes(down, transport), (transport, real)


def token_bytes(model: Model) -> int:
    """The identity-token reply (float32 whatever the transport; once a stage)."""
    return record_bytes({"identity-token": (model.token_dim,)}, "float32")


def main() -> None:
    """Print and record the table; fail if DISCO at 7B exceeds 25 MB."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    check_formula(MODELS[0])
    rows = table_header(
        "model",
        "method",
        "float32 down MB",
        "float32 up MB",
        "bfloat16 down MB",
        "bfloat16 up MB",
        "largest message",
    )
    disco_7b = 0
    for model in MODELS:
        for method, (down, up, note) in messages(model).items():
            sizes = [
                record_bytes(shapes, transport)
                for transport in ("float32", "bfloat16")
                for shapes in (down, up)
            ]
            if method == "disco" and model.label == "LLaVA-1.5-7B":
                disco_7b = max(sizes[2], sizes[3])
            label = f"{model.label}, r={model.rank}, E={model.experts}"
            cells = " | ".join(f"{b / 1e6:.3f}" for b in sizes)
            rows.append(f"| {label} | {method} | {cells} | {note} |")
            print(rows[-1])
    token = token_bytes(MODELS[1])
    verdict = "meets" if disco_7b <= DISCO_7B_LIMIT else "MISSES"
    rows.append("")
    rows.append(
        f"DISCO at 7B shapes in bfloat16: at most {disco_7b / 1e6:.2f} MB a message, "
        f"each way, per client per round ({verdict} the 25 MB goal; + {token} B of "
        'identity token once a stage). Run-config `transport-dtype = "bfloat16"` '
        "(default float32). MB = 10^6 bytes."
    )
    print(rows[-1])
    record_rows(TITLE, rows, enabled=not args.no_record)
    if disco_7b > DISCO_7B_LIMIT:
        raise SystemExit("DISCO at 7B shapes exceeds 25 MB per message in bfloat16")


if __name__ == "__main__":
    main()
