"""Client-level DP on mini-FCIT: what DISCO and Finetune keep at a given epsilon.

Central DP (``dp = "central"``): each site's update clipped to ``dp-clip`` = C, each
group mean noised with std ``z C / n``; ``z`` for a target epsilon at delta 1e-5 over
the whole schedule comes from the run's own accountant
(:func:`fcit_flower.strategies.dp_calibration.noise_for_epsilon`, the same as
``fcit-flower dp-noise``). Identity tokens are not noised (``token-noise = 0``):
DISCO's epsilon covers its updates, not its tokens (README "Privacy"; the token
bench shows what noising them costs).

Parts (``--part``):

``clip``
    C chosen on the **val** split (seed 0) at epsilon 8, for each method apart:
    the C with the best val Last. Never chosen on test.
``clipping``
    Test split, seed 0: the smallest and largest C of the grid with negligible
    noise (z = 1e-6), to tell what clipping costs from what the noise costs.
``table``
    Test split, Hom, task setting, beta 1: Last / Avg / BWT and the epsilon each run
    reports, at epsilon inf (``dp = "off"``: the comparison's own runs, reused),
    8, 4 and 1, with each method's C from ``--clip``.

A fixed ``dp-noise-seed`` per seed makes the runs reproducible (in deployment the
noise seed is secret; a site that can read it can remove the noise).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from bench.common import diagonal, mean, record_rows, run_cached, table_header
from fcit_flower.config import RunConfig
from fcit_flower.launch.dp_command import noise_for_run
from fcit_flower.tasks.mini_fcit import VERSION

EPSILONS = (8.0, 4.0, 1.0)
CLIPS = (0.001, 0.003, 0.01, 0.03)
DELTA = 1e-5
CLIP_ONLY_NOISE = 1e-6  # noise too small to matter: what clipping alone does


def calibrated_noise(epsilon: float) -> float:
    """``dp-noise`` spending ``epsilon`` over the default schedule (4 digits, up)."""
    config = RunConfig.from_mapping({"dp": "central", "dp-delta": DELTA})
    return noise_for_run(config, epsilon)


def dp_values(
    method: str, seed: int, clip: float, noise: float, **extra: Any
) -> dict[str, Any]:
    """The run-config of one DP run (noise seed fixed per seed: reproducible)."""
    return {
        "method": method,
        "seed": seed,
        **extra,
        "dp": "central",
        "dp-clip": clip,
        "dp-noise": noise,
        "dp-delta": DELTA,
        "dp-noise-seed": 1000 + seed,
    }


def clipped_share(metrics: dict[str, Any]) -> float:
    """Share of the uploads the server scaled down to C, over the run."""
    rounds = metrics["privacy"]["per_round"]
    clipped = sum(r["clipped"] for r in rounds)
    uploads = sum(r["uploads"] for r in rounds)
    return clipped / uploads if uploads else 0.0


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def clip_part(methods: list[str], results: Path) -> list[str]:
    noise = calibrated_noise(8.0)
    rows = table_header(
        "method",
        "dp-clip",
        "dp-noise (epsilon 8)",
        "Last (val)",
        "Avg (val)",
        "own stage (val)",
        "clipped",
        "epsilon",
    )
    val = {"eval-split": "val"}
    for method in methods:
        # References: the method without DP, and the base (zero-shot), on val
        for name in ("zeroshot", method)[methods.index(method) > 0 :]:
            metrics = run_cached({"method": name, "seed": 0, **val}, results)
            rows.append(
                f"| {name} (dp off) | - | - | {metrics['last']:.2f} | "
                f"{metrics['avg']:.2f} | {mean(diagonal(metrics)):.2f} | - | inf |"
            )
            print(rows[-1], flush=True)
        for clip in CLIPS:
            values = dp_values(method, 0, clip, noise, **val)
            metrics = run_cached(values, results)
            rows.append(
                f"| {method} | {clip:g} | {noise:g} | {metrics['last']:.2f} | "
                f"{metrics['avg']:.2f} | {mean(diagonal(metrics)):.2f} | "
                f"{100 * clipped_share(metrics):.0f}% | "
                f"{metrics['privacy']['epsilon']:.2f} |"
            )
            print(rows[-1], flush=True)
    return rows


def clipping_part(methods: list[str], results: Path) -> list[str]:
    """Clipping without noise (z = 1e-6): what C alone costs, test split, seed 0."""
    rows = table_header(
        "method", "dp-clip", "dp-noise", "Last", "Avg", "own stage", "clipped"
    )
    for method in methods:
        for clip in (CLIPS[0], CLIPS[-1]):
            metrics = run_cached(dp_values(method, 0, clip, CLIP_ONLY_NOISE), results)
            rows.append(
                f"| {method} | {clip:g} | {CLIP_ONLY_NOISE:g} | {metrics['last']:.2f} "
                f"| {metrics['avg']:.2f} | {mean(diagonal(metrics)):.2f} | "
                f"{100 * clipped_share(metrics):.0f}% |"
            )
            print(rows[-1], flush=True)
    return rows


def table_part(
    methods: list[str], seeds: list[int], clips: dict[str, float], results: Path
) -> list[str]:
    noises = {epsilon: calibrated_noise(epsilon) for epsilon in EPSILONS}
    rows = table_header(
        "method",
        "epsilon (target)",
        "dp-noise",
        "dp-clip",
        "Last",
        "Avg",
        "BWT",
        "own stage",
        "epsilon (reported)",
        "clipped",
        "seeds",
    )
    for method in methods:
        runs = [run_cached({"method": method, "seed": s}, results) for s in seeds]
        rows.append(_table_row(method, "inf (dp off)", "-", "-", runs))
        print(rows[-1], flush=True)
        for epsilon, noise in noises.items():
            clip = clips[method]
            runs = [
                run_cached(dp_values(method, s, clip, noise), results) for s in seeds
            ]
            rows.append(_table_row(method, f"{epsilon:g}", f"{noise:g}", clip, runs))
            print(rows[-1], flush=True)
    return rows


def _table_row(
    method: str, epsilon: str, noise: str, clip: object, runs: list[dict[str, Any]]
) -> str:
    private = [r for r in runs if "privacy" in r]
    reported = (
        f"{max(r['privacy']['epsilon'] for r in private):.2f}" if private else "inf"
    )
    clipped = (
        f"{100 * mean([clipped_share(r) for r in private]):.0f}%" if private else "-"
    )
    bwt = [r["bwt"] for r in runs if r["bwt"] is not None]
    cells = [
        _spread([r["last"] for r in runs]),
        _spread([r["avg"] for r in runs]),
        _spread(bwt) if bwt else "n/a",
        _spread([mean(diagonal(r)) for r in runs]),
    ]
    return (
        f"| {method} | {epsilon} | {noise} | {clip} | {' | '.join(cells)} | "
        f"{reported} | {clipped} | {len(runs)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=("clip", "table", "clipping"), required=True)
    parser.add_argument("--methods", default="finetune,disco")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--clip",
        default="finetune=0.001,disco=0.001",
        help="each method's dp-clip (the clip part's val choice)",
    )
    parser.add_argument("--results-dir", default="results/bench-mini-fcit")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    methods = args.methods.split(",")
    results = Path(args.results_dir)
    if args.part == "clip":
        rows = clip_part(methods, results)
        title = f"Central DP: dp-clip chosen on val (mini-FCIT {VERSION}, epsilon 8)"
    elif args.part == "clipping":
        rows = clipping_part(methods, results)
        title = f"Central DP: clipping alone (mini-FCIT {VERSION}, seed 0, test)"
    else:
        clips = {
            name: float(value)
            for name, value in (item.split("=") for item in args.clip.split(","))
        }
        seeds = [int(s) for s in args.seeds.split(",")]
        rows = table_part(methods, seeds, clips, results)
        title = f"Privacy and utility: central DP on mini-FCIT {VERSION} (test)"
    record_rows(title, rows, enabled=not args.no_record)


if __name__ == "__main__":
    main()
