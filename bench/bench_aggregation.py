"""Server aggregation scaling: DISCO subspace aggregation of N 7B-shaped uploads.

Synthetic uploads of one DISCO subspace of LLaVA-1.5-7B (LoRA rank 64 split into
E = 8 subspaces of rank 8 on gate/up/down_proj of 32 layers: 46.4 MB float32 each)
are aggregated by ``weighted_average`` and a FedAvg server-optimizer step, the way
``Disco.apply_uploads`` does per subspace. Uploads come from a generator (streamed)
or from a list (all held, as a Flower ``Grid.send_and_receive`` reply list holds
them). Prints time and peak traced memory (``tracemalloc``: numpy reports its
buffers to it) for N = 5, 50, 500.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Iterator

import numpy as np

from bench.common import record
from fcit_flower.strategies.aggregation import weighted_average
from fcit_flower.strategies.server_optim import ServerOptimizer, ServerOptimizerSpec

HIDDEN, INTERMEDIATE, LAYERS, RANK = 4096, 11008, 32, 8


def subspace_shapes() -> dict[str, tuple[int, int]]:
    """Keys and shapes of one rank-8 subspace on LLaVA-1.5-7B's MLP projections."""
    shapes = {}
    for layer in range(LAYERS):
        for name, (fan_in, fan_out) in {
            "gate_proj": (HIDDEN, INTERMEDIATE),
            "up_proj": (HIDDEN, INTERMEDIATE),
            "down_proj": (INTERMEDIATE, HIDDEN),
        }.items():
            prefix = f"model.language_model.layers.{layer}.mlp.{name}"
            shapes[f"{prefix}.lora_A.weight"] = (RANK, fan_in)
            shapes[f"{prefix}.lora_B.weight"] = (fan_out, RANK)
    return shapes


def uploads(n: int, shapes: dict[str, tuple[int, int]]) -> Iterator[dict]:
    for client in range(n):
        yield {k: np.full(s, client * 1e-3, np.float32) for k, s in shapes.items()}


def measure(n: int, streamed: bool, shapes: dict) -> tuple[float, float]:
    weights = [float(10 + c) for c in range(n)]
    current = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    started = time.perf_counter()
    source = uploads(n, shapes) if streamed else list(uploads(n, shapes))
    averaged = weighted_average(source, weights)
    ServerOptimizer(ServerOptimizerSpec("fedavg")).step(current, averaged, stage=0)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del source, averaged
    return seconds, (peak - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="5,50,500")
    parser.add_argument("--held-max", type=int, default=50, help="largest N held")
    args = parser.parse_args()
    shapes = subspace_shapes()
    mb = sum(int(np.prod(s)) for s in shapes.values()) * 4 / 2**20
    lines = [
        f"One upload: {mb:.1f} MiB (float32). Peak = traced memory above the "
        "current global subspace.",
        "",
        "| uploads N | streamed: s | s per upload | peak MiB | held in a list: s "
        "| peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    for n in (int(x) for x in args.clients.split(",")):
        seconds, peak = measure(n, True, shapes)
        held = (
            "{:.2f} | {:.0f}".format(*measure(n, False, shapes))
            if n <= args.held_max
            else "- | -"
        )
        lines.append(
            f"| {n} | {seconds:.2f} | {seconds / n:.3f} | {peak:.0f} | {held} |"
        )
        print(lines[-1], flush=True)
    body = "\n".join(lines)
    print(body)
    record("Server aggregation scaling (DISCO subspace, LLaVA-1.5-7B shapes)", body)


if __name__ == "__main__":
    main()
