"""``fcit-flower base``: build (once) or check a base model; print its fingerprint.

Every site of a federation must train the same base. Each site runs this command
and compares the printed SHA-256 with the coordinator's: the tiny base is built
from code and a fixed seed on a fixed thread count and fixed CPU kernels
(:mod:`fcit_flower.cpu_kernels`), so that the CPU type does not change the weights
(checked on one machine; a mismatch here is how a second CPU type would show it);
a local checkpoint (``--model-path``) is hashed as it is on disk. Each run's
``manifest.json`` records the same hashes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def add_base_command(sub: Any) -> None:
    """Add ``base`` to the CLI's sub-parsers."""
    command = sub.add_parser(
        "base",
        help="build the tiny base (once) or check a checkpoint; print its SHA-256",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    command.add_argument(
        "--model-path",
        default="",
        help="a local LLaVA checkpoint folder to fingerprint instead of the tiny base",
    )


def base_command(args: argparse.Namespace) -> int:
    """The ``base`` command: print the base's folder and weight hashes."""
    from fcit_flower.report.manifest import base_weights, combined_digest

    if args.model_path:
        path = Path(args.model_path)
        if not (path / "config.json").is_file():
            raise ValueError(
                f"--model-path {path}: no config.json there (not a model folder)"
            )
        name = "checkpoint"
    else:
        from fcit_flower.models.tiny import ensure_tiny_base
        from fcit_flower.models.tiny_spec import TINY_BASE_ENV

        path = ensure_tiny_base()  # the spec $FCIT_TINY_BASE names
        name = f"tiny base {os.environ.get(TINY_BASE_ENV, 'standard')!r}"
    info = base_weights(path, max_hash_bytes=None)
    digests = info.get("weights_sha256", {})
    if not digests:
        raise ValueError(f"{path}: no *.safetensors or *.bin weight file")
    print(f"{name}: {path}")
    for file, digest in digests.items():
        print(f"  {file}: sha256 {digest} ({info['weight_bytes'][file]} bytes)")
    print(f"fingerprint: {combined_digest(digests)}")
    return 0
