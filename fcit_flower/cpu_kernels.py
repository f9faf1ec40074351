"""One set of CPU kernels on every x86 machine, so a CPU run gives the same numbers.

torch picks its CPU code paths by the machine's widest instruction set: ATen's
vectorised kernels (AVX2 or AVX-512), MKL's GEMM and oneDNN's convolutions each
sum in another order per path, and MKL also branches on the CPU vendor. Thousands
of pre-training steps amplify those last-bit differences: the same seed built two
different tiny bases on an Intel and an AMD machine, and every benchmark number
after them moved (BENCHMARKS "Pinned CPU kernels"). Pinning all three libraries to
their AVX2 paths, which every x86 server since 2015 runs, removes the CPU type
from the result. The variables must be set before torch loads, so the package's
``__init__`` calls :func:`pin_cpu_kernels`; no torch import here.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, MutableMapping

# Opt out (for speed on a machine whose numbers need not match anyone's).
NATIVE_ENV = "FCIT_CPU_KERNELS"
PINNED_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility mode
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (the vision tower's convolution)
}
X86_MACHINES = frozenset({"x86_64", "amd64", "i686", "i386"})


def pin_cpu_kernels(
    environ: MutableMapping[str, str] | None = None, *, machine: str | None = None
) -> dict[str, str]:
    """Set :data:`PINNED_KERNELS` in ``environ`` where the user has not set them.

    Nothing is set off x86 or when ``$FCIT_CPU_KERNELS`` is ``native``.

    Parameters
    ----------
    environ : MutableMapping, optional
        The environment to change; ``os.environ`` by default.
    machine : str, optional
        The machine type; ``platform.machine()`` by default.

    Returns
    -------
    dict
        The variables this call set (empty when it set none).
    """
    env = os.environ if environ is None else environ
    kind = (machine if machine is not None else platform.machine()).lower()
    if kind not in X86_MACHINES or env.get(NATIVE_ENV, "").lower() == "native":
        return {}
    added = {k: v for k, v in PINNED_KERNELS.items() if k not in env}
    env.update(added)
    return added


def kernel_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The kernel variables in effect (``""`` where unset): for manifests and caches."""
    env = os.environ if environ is None else environ
    return {name: env.get(name, "") for name in PINNED_KERNELS}


def unpinned_warning(capability: str, environ: Mapping[str, str] | None = None) -> str:
    """Why this process's kernels are not the pinned ones (``""`` when they are).

    ``capability``: ``torch.backends.cpu.get_cpu_capability()``. torch fixes it at
    its first CPU kernel, so a program that ran torch before importing fcit_flower
    keeps its native path.
    """
    env = os.environ if environ is None else environ
    if env.get(NATIVE_ENV, "").lower() == "native" or not all(
        env.get(k) == v for k, v in PINNED_KERNELS.items()
    ):
        return ""  # not pinned on purpose (opt-out, a user's own value, not x86)
    if capability.lower() != PINNED_KERNELS["ATEN_CPU_CAPABILITY"]:
        return (
            f"torch runs its {capability} CPU kernels, not the pinned AVX2 ones "
            "(torch computed before fcit_flower was imported): numbers will differ "
            "from the reference tables; import fcit_flower first"
        )
    return ""
