"""Pre-train the tiny base in a child process on the base's own CPU kernels.

MKL reads its reproducibility branch once per process, at its first call, so the
caller (a ClientApp, a benchmark, the CLI) cannot switch it for pre-training
alone: a child process started with :func:`fcit_flower.cpu_kernels.pretraining_env`
can. :func:`build_base_files` runs :mod:`fcit_flower.models.base_child` and
waits.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from fcit_flower.cpu_kernels import pretraining_env
from fcit_flower.models.tiny_spec import TinyModelSpec

# The child imports the training code; this module must not (tiny imports it).
_CHILD = "fcit_flower.models.base_child"


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
    command = [sys.executable, "-P", "-m", _CHILD, json.dumps(asdict(spec))]
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
