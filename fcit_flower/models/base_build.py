"""Pre-train the tiny base in a child process on the base's own CPU kernels.

MKL reads its reproducibility branch once per process, at its first call, so the
caller (a ClientApp, a benchmark, the CLI) cannot switch it for pre-training
alone: a child process started with :func:`fcit_flower.cpu_kernels.pretraining_env`
can. ``python -m fcit_flower.models.base_build SPEC_JSON FOLDER`` writes the base
into ``FOLDER``; :func:`build_base_files` runs it and waits.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from fcit_flower.cpu_kernels import NATIVE_ENV, pretraining_env
from fcit_flower.models.tiny_spec import TinyModelSpec


def build_base_files(spec: TinyModelSpec, folder: Path) -> None:
    """Pre-train the base of ``spec`` in a child process; write it into ``folder``.

    Raises
    ------
    RuntimeError
        If the child fails (its log, on the inherited stderr, says why).
    """
    command = [sys.executable, "-m", __name__, json.dumps(asdict(spec)), str(folder)]
    code = subprocess.run(command, env=pretraining_env(), check=False).returncode
    if code != 0:
        raise RuntimeError(f"pre-training the tiny base failed (exit code {code})")


def main(argv: list[str] | None = None) -> None:
    """Child entry point: ``SPEC_JSON FOLDER``."""
    import os

    import torch

    from fcit_flower.models.tiny import pretrain_base, save_base

    spec_json, folder = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if os.environ.get(NATIVE_ENV, "").lower() != "native":
        # oneDNN's blocking follows the CPU's cache sizes: convolve with ATen's own.
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    spec = TinyModelSpec(**json.loads(spec_json))
    model, tokenizer = pretrain_base(spec)
    save_base(model, tokenizer, spec, Path(folder))


if __name__ == "__main__":
    main()
