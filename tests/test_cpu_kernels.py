"""CPU runs use torch's, MKL's and oneDNN's AVX2 paths whatever the CPU type, so
the tiny base and every CPU number come out the same on Intel and AMD machines."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from fcit_flower import cpu_kernels
from fcit_flower.models import tiny, tiny_spec


def test_pinning_sets_every_kernel_variable_on_x86():
    env: dict[str, str] = {}
    added = cpu_kernels.pin_cpu_kernels(env, machine="x86_64")
    assert env == cpu_kernels.PINNED_KERNELS
    assert added == cpu_kernels.PINNED_KERNELS


def test_pinning_keeps_a_users_own_value():
    env = {"MKL_CBWR": "COMPATIBLE"}
    added = cpu_kernels.pin_cpu_kernels(env, machine="AMD64")
    assert env["MKL_CBWR"] == "COMPATIBLE"
    assert "MKL_CBWR" not in added
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"


@pytest.mark.parametrize(
    ("env", "machine"),
    [({cpu_kernels.NATIVE_ENV: "native"}, "x86_64"), ({}, "aarch64")],
)
def test_pinning_sets_nothing_when_opted_out_or_off_x86(env, machine):
    before = dict(env)
    assert cpu_kernels.pin_cpu_kernels(env, machine=machine) == {}
    assert env == before


def test_a_process_that_ran_torch_first_is_told_its_kernels_differ():
    pinned = dict(cpu_kernels.PINNED_KERNELS)
    assert cpu_kernels.unpinned_warning("AVX2", pinned) == ""
    assert "AVX512" in cpu_kernels.unpinned_warning("AVX512", pinned)
    # A user's own kernel choice or the opt-out is not a mistake to warn about.
    assert cpu_kernels.unpinned_warning("AVX512", {**pinned, "MKL_CBWR": "AUTO"}) == ""
    opted_out = {**pinned, cpu_kernels.NATIVE_ENV: "native"}
    assert cpu_kernels.unpinned_warning("AVX512", opted_out) == ""


def test_the_kernel_settings_are_part_of_the_base_fingerprint(monkeypatch):
    spec = tiny_spec.TINY_BASES["smoke"]
    for name, value in cpu_kernels.PINNED_KERNELS.items():
        monkeypatch.setenv(name, value)
    pinned = tiny.base_fingerprint(spec)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    assert tiny.base_fingerprint(spec) != pinned


def _has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def test_importing_fcit_flower_first_puts_torch_on_its_avx2_kernels():
    if platform.machine().lower() not in cpu_kernels.X86_MACHINES or not _has_avx2():
        pytest.skip("the pinned kernels are x86 AVX2 ones")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in cpu_kernels.PINNED_KERNELS and k != cpu_kernels.NATIVE_ENV
    }
    code = (
        "import fcit_flower, torch, os\n"
        "torch.ones(4).sum()\n"
        "print(torch.backends.cpu.get_cpu_capability(), os.environ['MKL_CBWR'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert out.stdout.split() == ["AVX2", "AVX2"]
