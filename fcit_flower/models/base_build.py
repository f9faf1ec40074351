"""Pre-train the tiny base in a child process on the base's own CPU kernels.

MKL reads its reproducibility branch once per process, at its first call, so the
caller (a ClientApp, a benchmark, the CLI) cannot switch it for pre-training
alone: a child process started with :func:`fcit_flower.cpu_kernels.pretraining_env`
can. ``python -m fcit_flower.models.base_build SPEC_JSON FOLDER`` writes the base
into ``FOLDER``; :func:`build_base_files` runs it and waits.
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from fcit_flower.cpu_kernels import base_kernel_settings, pretraining_env
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


def build_base_files(spec: TinyModelSpec, folder: Path) -> None:
    """Pre-train the base of ``spec`` in a child process; write it into ``folder``.

    The child sees this process's ``sys.path`` (an app loaded by Flower or Ray
    may live on a path only this process knows) and ends with it; its log lines
    pass through to this process's stderr.

    Raises
    ------
    RuntimeError
        If the child fails: its exit code and its last log line.
    """
    env = pretraining_env()
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    command = [sys.executable, "-P", "-m", __name__, json.dumps(asdict(spec))]
    tail: collections.deque[str] = collections.deque(maxlen=1)
    with subprocess.Popen(
        [*command, str(folder), str(os.getpid())],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stderr is not None
            for line in child.stderr:
                sys.stderr.write(line)
                if line.strip():
                    tail.append(line.strip())
            code = child.wait()
        except BaseException:
            child.terminate()
            raise
    if code != 0:
        last = tail[-1] if tail else "no output"
        raise RuntimeError(
            f"pre-training the tiny base failed (exit code {code}): {last}"
        )


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
