"""Bytes per client per round: Finetune (rank-r LoRA) vs DISCO (one rank-r/E subspace).

Counts the ArrayRecords that actually travel (Flower's ``count_bytes``), for the
tiny model and for LLaVA-1.5-7B's language model shapes (32 layers, 4096 -> 11008,
r = 64, E = 8, as in the paper), without loading any weights.
"""

from __future__ import annotations

import argparse

import numpy as np
from flwr.app import Array, ArrayRecord

from bench.common import record_rows, table_header

TOKEN_DIM = {"tiny (MiniLM tokens)": 384, "LLaVA-1.5-7B (CLIP tokens)": 768}


TITLE = "Communication per client per round (projector frozen, the default)"


def lora_arrays(
    layers: int, hidden: int, inter: int, rank: int
) -> dict[str, np.ndarray]:
    """LoRA factors of gate/up/down projections of every layer, float32."""
    shapes = {
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }
    arrays = {}
    for layer in range(layers):
        for name, (fan_in, fan_out) in shapes.items():
            key = f"model.language_model.layers.{layer}.mlp.{name}"
            arrays[f"{key}.lora_A.weight"] = np.zeros((rank, fan_in), np.float32)
            arrays[f"{key}.lora_B.weight"] = np.zeros((fan_out, rank), np.float32)
    return arrays


def nbytes(arrays: dict[str, np.ndarray]) -> int:
    return ArrayRecord({k: Array(v) for k, v in arrays.items()}).count_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows = table_header(
        "model",
        "Finetune up = down (rank r)",
        "DISCO down",
        "DISCO up (+ token)",
        "DISCO / Finetune up",
    )
    for label, layers, hidden, inter, rank, num in (
        ("tiny (MiniLM tokens)", 2, 128, 256, 32, 8),
        ("LLaVA-1.5-7B (CLIP tokens)", 32, 4096, 11008, 64, 8),
    ):
        full = nbytes(lora_arrays(layers, hidden, inter, rank))
        sub = nbytes(lora_arrays(layers, hidden, inter, rank // num))
        token = nbytes({"identity-token": np.zeros(TOKEN_DIM[label], np.float32)})
        rows.append(
            f"| {label}, r={rank}, E={num} | {full / 1e6:.3f} MB | "
            f"{sub / 1e6:.3f} MB | {(sub + token) / 1e6:.3f} MB | "
            f"{(sub + token) / full:.3f} |"
        )
        print(rows[-1])
    record_rows(TITLE, rows, enabled=not args.no_record)


if __name__ == "__main__":
    main()
