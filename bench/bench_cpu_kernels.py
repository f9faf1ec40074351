"""Does the tiny base depend on which CPU kernels torch, MKL and oneDNN run?

Pre-trains a short base (the standard shape, a small corpus, ``--steps`` per
stage, 2 threads) in a fresh process per kernel setting and prints a digest of
the weights and the pre-training seconds. Each library's native path (AVX-512
where the CPU has it, MKL's vendor dispatch) is swapped for its AVX2 one in turn;
equal digests mean the setting does not change the weights. "runs" is what
fcit_flower sets on import, "base" what the base's pre-training child runs on
(:mod:`fcit_flower.cpu_kernels`); a row "+ X" adds a variable that stands in for a
machine whose library would dispatch otherwise: it must not change the digest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bench.common import record_rows, table_header
from fcit_flower.cpu_kernels import BASE_KERNELS, NATIVE_ENV, PINNED_KERNELS

NATIVE = {NATIVE_ENV: "native"}
NO_ONEDNN = {"BENCH_NO_ONEDNN": "1"}  # the child turns oneDNN off, as base_build does
SETTINGS = {
    "native": NATIVE,
    "native, again": NATIVE,
    "ATen AVX2 only": {**NATIVE, "ATEN_CPU_CAPABILITY": "avx2"},
    "MKL AVX2 only": {**NATIVE, "MKL_CBWR": "AVX2"},
    "oneDNN AVX2 only": {**NATIVE, "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "runs": PINNED_KERNELS,
    "runs, again": PINNED_KERNELS,
    "runs + MKL_ENABLE_INSTRUCTIONS=AVX512": {
        **PINNED_KERNELS,
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
    },
    "base": {**BASE_KERNELS, **NO_ONEDNN},
    "base, again": {**BASE_KERNELS, **NO_ONEDNN},
    "base + MKL_ENABLE_INSTRUCTIONS=AVX512": {
        **BASE_KERNELS,
        **NO_ONEDNN,
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
    },
    "base + ONEDNN_MAX_CPU_ISA=AVX512_CORE": {
        **BASE_KERNELS,
        **NO_ONEDNN,
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
    },
}

CHILD = """
import hashlib, json, os, sys, time
from dataclasses import replace
import fcit_flower
import torch
from fcit_flower.models.tiny import pretrain_base
from fcit_flower.models.tiny_spec import TINY_BASES
if os.environ.get("BENCH_NO_ONEDNN"):
    torch.backends.mkldnn.enabled = False
steps = int(sys.argv[1])
spec = replace(TINY_BASES["standard"], alignment_examples=400, pretrain_examples=400,
               alignment_steps=steps, pretrain_steps=steps)
start = time.perf_counter()
model, _ = pretrain_base(spec)
seconds = time.perf_counter() - start
digest = hashlib.sha256()
for _, tensor in sorted(model.state_dict().items()):
    digest.update(tensor.detach().contiguous().numpy().tobytes())
print(json.dumps({"digest": digest.hexdigest()[:16], "seconds": seconds,
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def run_setting(extra: dict[str, str], steps: int) -> dict[str, object]:
    """Pre-train in a fresh process with ``extra`` added to a kernel-free env."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PINNED_KERNELS and k != NATIVE_ENV and not k.startswith("MKL_")
    }
    env.update(extra)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60, help="steps per stage")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows = table_header(
        "kernels", "variables set", "torch capability", "weights digest", "s"
    )
    for name, extra in SETTINGS.items():
        got = run_setting(extra, args.steps)
        variables = " ".join(
            f"{k}={v}" for k, v in extra.items() if k != NATIVE_ENV
        ).replace("BENCH_NO_ONEDNN=1", "oneDNN off")
        rows.append(
            f"| {name} | {variables or '-'} | {got['capability']} | "
            f"`{got['digest']}` | {float(got['seconds']):.1f} |"  # type: ignore[arg-type]
        )
        print(rows[-1], flush=True)
    record_rows(
        f"Pinned CPU kernels: a short pre-training's weights ({args.steps} steps per "
        "stage, standard shape, 2 threads)",
        rows,
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    main()
