"""Fixed CPU kernel paths, so that the CPU type does not change a CPU run's numbers.

torch picks its CPU code paths by the machine: ATen's vectorised kernels (AVX2 or
AVX-512), MKL's GEMM and vector maths, and oneDNN's convolutions each sum in
another order per path, and MKL also branches on the CPU vendor. Thousands of
pre-training steps amplify those last-bit differences: the same seed built two
different tiny bases on two machines, and every benchmark number after them moved
(BENCHMARKS "Pinned CPU kernels"). Two profiles:

- runs (:data:`PINNED_KERNELS`, set on import): every library on its AVX2 path.
  Intel documents MKL's AVX2 mode as reproducible across Intel CPUs only (on other
  vendors MKL falls back to its automatic branch), so runs on an AMD and an Intel
  machine may still differ; pinning costs no measurable speed.
- the tiny base's pre-training (:func:`pretraining_env`, in a child process):
  MKL's ``COMPATIBLE`` branch, the one Intel documents as giving the same results
  on Intel and compatible CPUs, and no oneDNN (whose blocking follows the cache
  size); the full base takes about 1.4x as long (paid once per machine).

The variables must be set before torch loads, so the package's ``__init__`` calls
:func:`pin_cpu_kernels`; no torch import here.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Mapping, MutableMapping
from pathlib import Path

# Opt out (for speed on a machine whose numbers need not match anyone's).
NATIVE_ENV = "FCIT_CPU_KERNELS"
PINNED_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility mode
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (the vision tower's convolution)
}
X86_MACHINES = frozenset({"x86_64", "amd64", "i686", "i386"})
# The base's pre-training: MKL's vendor-independent branch; oneDNN off (in the child).
BASE_KERNELS = {**PINNED_KERNELS, "MKL_CBWR": "COMPATIBLE"}


# torch runs AVX2 kernels when told to, without checking the CPU: an x86 CPU
# without them (an old Atom, an emulator) would die of an illegal instruction.
REQUIRED_FLAGS = frozenset({"avx2", "fma"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def _pinnable(
    env: Mapping[str, str], machine: str | None, flags: frozenset[str] | None
) -> bool:
    kind = (machine if machine is not None else platform.machine()).lower()
    has = cpu_flags() if flags is None else flags
    return (
        kind in X86_MACHINES
        and REQUIRED_FLAGS <= has
        and env.get(NATIVE_ENV, "").lower() != "native"
    )


def pin_cpu_kernels(
    environ: MutableMapping[str, str] | None = None,
    *,
    machine: str | None = None,
    flags: frozenset[str] | None = None,
) -> dict[str, str]:
    """Set :data:`PINNED_KERNELS` in ``environ`` where the user has not set them.

    Nothing is set off x86, on a CPU without AVX2 and FMA, or when
    ``$FCIT_CPU_KERNELS`` is ``native``.

    Parameters
    ----------
    environ : MutableMapping, optional
        The environment to change; ``os.environ`` by default.
    machine : str, optional
        The machine type; ``platform.machine()`` by default.
    flags : frozenset of str, optional
        The CPU's feature flags; :func:`cpu_flags` by default.

    Returns
    -------
    dict
        The variables this call set (empty when it set none).
    """
    env = os.environ if environ is None else environ
    if not _pinnable(env, machine, flags):
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


def pretraining_env(
    environ: Mapping[str, str] | None = None,
    *,
    machine: str | None = None,
    flags: frozenset[str] | None = None,
) -> dict[str, str]:
    """The environment of the base's pre-training process: :data:`BASE_KERNELS`.

    They replace a user's own values (every machine must build the same base);
    ``$FCIT_CPU_KERNELS=native`` and machines that cannot run the pinned kernels
    keep the environment as is.
    """
    env = dict(os.environ if environ is None else environ)
    if _pinnable(env, machine, flags):
        env.update(BASE_KERNELS)
    return env


def base_kernel_settings(
    environ: Mapping[str, str] | None = None,
    *,
    machine: str | None = None,
    flags: frozenset[str] | None = None,
) -> dict[str, str]:
    """The kernels the base is pre-trained with (part of its cache key)."""
    env = os.environ if environ is None else environ
    if not _pinnable(env, machine, flags):
        return {NATIVE_ENV: "native"}
    return {**BASE_KERNELS, "onednn": "off"}
