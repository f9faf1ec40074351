"""Child process that pre-trains the tiny base: ``SPEC_JSON FOLDER PARENT_PID``.

Started by :func:`fcit_flower.models.base_build.build_base_files` with the base's
own CPU kernels in its environment; writes the base into ``FOLDER``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
from pathlib import Path

from fcit_flower.cpu_kernels import base_kernel_settings
from fcit_flower.models.tiny_spec import TinyModelSpec

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Linux: end this child when ``parent`` dies (no orphan training for 30 min)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the signal was set
        raise SystemExit("the process that asked for the base has ended")


def main(argv: list[str] | None = None) -> None:
    """Child entry point: ``SPEC_JSON FOLDER PARENT_PID``."""
    spec_json, folder, parent = argv if argv is not None else sys.argv[1:]
    _die_with_parent(int(parent))

    import torch

    from fcit_flower.models.tiny import pretrain_base, save_base

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # The same rule as the base's cache key: pinned, unless opted out or unable.
    if base_kernel_settings().get("onednn") == "off":
        # oneDNN's blocking follows the CPU's cache sizes: convolve with ATen's own.
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
        capability = torch.backends.cpu.get_cpu_capability()
        if capability != "AVX2":
            raise SystemExit(
                f"the base's kernels are AVX2 ones, torch runs {capability}"
            )
    spec = TinyModelSpec(**json.loads(spec_json))
    model, tokenizer = pretrain_base(spec)
    save_base(model, tokenizer, spec, Path(folder))


if __name__ == "__main__":
    main()
