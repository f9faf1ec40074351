"""Same numbers when models share a process? Every method alone and all in one process.

Extends :mod:`bench.bench_identity` for changes to how a process holds its models
(one base shared by every adapted model). Per method, seed 0 and a small config
(:data:`SMALL`: batch 2, so that clients take several steps after the warm-up's
zero-lr first one), it fingerprints the accuracy matrix, the final global arrays
(SHA-256 of the last checkpoint's ``global/`` arrays), every greedy prediction and
the logits of each evaluation model on each test set. ``--mode each`` runs every
method in a fresh interpreter; ``--mode all`` runs them one after another in one
process, so that every adapter kind (PEFT LoRA, subspace and block LoRA, MoE-LoRA)
lives on the same cached base. Run it in two trees (the older one exported with
``git archive``; the script is run by its path, with ``PYTHONPATH`` at the tree)
and compare::

    (cd /tmp/old && PYTHONPATH=. python $NEW/bench/bench_shared_identity.py \
        run /tmp/old.json --mode all)
    python -m bench.bench_shared_identity run /tmp/new.json --mode all
    python -m bench.bench_shared_identity compare /tmp/old.json /tmp/new.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_identity import commit

METHODS = ("finetune", "disco", "ewc", "olora", "mlora", "moelora", "mtl")
SMALL = {
    "num-clients": 3,
    "clients-per-round": 2,
    "rounds-per-stage": 1,
    "num-stages": 2,
    "train-size": 18,
    "test-size": 4,
    "batch-size": 2,
    "moelora-experts": 4,
}
FINGERPRINTS = ("accuracy_matrix", "global_sha256", "predictions_sha256", "logits")


def global_sha256(run_dir: Path) -> str:
    """SHA-256 over the sorted ``global/`` arrays of the newest checkpoint."""
    files = sorted((run_dir / "checkpoints").glob("ckpt-*.npz"))
    digest = hashlib.sha256()
    with np.load(files[-1]) as data:
        for key in sorted(k for k in data.files if k.startswith("global/")):
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(data[key]).tobytes())
    return digest.hexdigest()


def run_method(method: str, results: Path, train_projector: bool) -> dict[str, Any]:
    """One in-process run; fingerprints of its evaluations and final arrays."""
    import torch

    import fcit_flower.server_app as server_app
    from fcit_flower.inprocess import run_inprocess
    from fcit_flower.training import to_model_device, training_batch

    evaluate = server_app.evaluate_state
    predictions: list[Any] = []
    logits = hashlib.sha256()

    def recorded(config: Any, runtime: Any, evaluated: Any, test_sets: Any) -> Any:
        bundle = runtime.bundle
        for samples in test_sets.values():  # the logits, before decoding
            evaluated.model.eval()
            if evaluated.before_batch is not None:
                evaluated.before_batch(samples)
            inputs = training_batch(
                bundle.tokenizer,
                samples,
                bundle.image_size,
                bundle.num_image_tokens,
                bundle.image_mean,
                bundle.image_std,
            )
            with torch.no_grad():
                out = evaluated.model(**to_model_device(inputs, evaluated.model))
            logits.update(out.logits.float().cpu().numpy().tobytes())
        result = evaluate(config, runtime, evaluated, test_sets)
        predictions.append(result.predictions)
        return result

    server_app.evaluate_state = recorded  # what the ServerApp calls
    config = {**SMALL, "method": method, "results-dir": str(results)}
    config.update({"run-name": method, "train-projector": train_projector})
    try:
        run_inprocess(config)
    finally:
        server_app.evaluate_state = evaluate
    metrics = json.loads((results / method / "metrics.json").read_text())
    encoded = json.dumps(predictions, sort_keys=True).encode()
    return {
        "accuracy_matrix": metrics["accuracy_matrix"],
        "global_sha256": global_sha256(results / method),
        "predictions_sha256": hashlib.sha256(encoded).hexdigest(),
        "logits": logits.hexdigest(),
    }


def run(out: Path, mode: str, train_projector: bool) -> None:
    """Fingerprint every method (each in its own process, or all in this one)."""
    found: dict[str, Any] = {"commit": commit(), "mode": mode, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            if mode == "all":
                row = run_method(method, Path(tmp), train_projector)
            else:
                args = ["one", "-", "--method", method]
                args += ["--train-projector"] if train_projector else []
                done = subprocess.run(
                    [sys.executable, __file__, *args],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row = json.loads(done.stdout.strip().splitlines()[-1])
            found["methods"][method] = row
            print(method, row["global_sha256"][:12], row["logits"][:12], flush=True)
    out.write_text(json.dumps(found, indent=1))


def compare(before: Path, after: Path) -> str:
    """Markdown table: per method, whether every fingerprint is identical."""
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    lines = [
        f"before: {a['commit']}, after: {b['commit']} (mode {b['mode']})",
        "",
        "| method | " + " | ".join(FINGERPRINTS) + " |",
        "|---|" + "---|" * len(FINGERPRINTS),
    ]
    for method, old in a["methods"].items():
        new = b["methods"][method]
        same = ["yes" if old[k] == new[k] else "no" for k in FINGERPRINTS]
        lines.append(f"| {method} | " + " | ".join(same) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run", help="fingerprint every method")
    runner.add_argument("out", type=Path)
    runner.add_argument("--mode", choices=("each", "all"), default="all")
    runner.add_argument("--train-projector", action="store_true")
    single = sub.add_parser("one", help="one method; prints its JSON fingerprints")
    single.add_argument("out")
    single.add_argument("--method", required=True)
    single.add_argument("--train-projector", action="store_true")
    both = sub.add_parser("compare", help="tabulate two fingerprint files")
    both.add_argument("before", type=Path)
    both.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.out, args.mode, args.train_projector)
    elif args.command == "one":
        with tempfile.TemporaryDirectory() as tmp:
            row = run_method(args.method, Path(tmp), args.train_projector)
        print(json.dumps(row))
    else:
        print(compare(args.before, args.after))


if __name__ == "__main__":
    main()
