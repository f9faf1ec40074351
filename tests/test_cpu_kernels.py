"""CPU runs use fixed torch, MKL and oneDNN code paths whatever the CPU type, and
the tiny base is pre-trained on MKL's vendor-independent branch in a child process,
so that the machine does not choose the base."""

import os
import platform
import subprocess
import sys

import pytest

from fcit_flower import cpu_kernels
from fcit_flower.models import tiny, tiny_spec

AVX2 = frozenset({"sse2", "avx", "avx2", "fma"})


def test_pinning_sets_every_kernel_variable_on_x86():
    env: dict[str, str] = {}
    added = cpu_kernels.pin_cpu_kernels(env, machine="x86_64", flags=AVX2)
    assert env == cpu_kernels.PINNED_KERNELS
    assert added == cpu_kernels.PINNED_KERNELS


def test_pinning_keeps_a_users_own_value():
    env = {"MKL_CBWR": "COMPATIBLE"}
    added = cpu_kernels.pin_cpu_kernels(env, machine="AMD64", flags=AVX2)
    assert env["MKL_CBWR"] == "COMPATIBLE"
    assert "MKL_CBWR" not in added
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"


@pytest.mark.parametrize(
    ("env", "machine", "flags"),
    [
        ({cpu_kernels.NATIVE_ENV: "native"}, "x86_64", AVX2),
        ({}, "aarch64", frozenset({"asimd"})),
        ({}, "x86_64", frozenset({"sse2", "avx"})),  # AVX2 kernels would crash it
    ],
)
def test_pinning_sets_nothing_when_opted_out_or_unable(env, machine, flags):
    before = dict(env)
    assert cpu_kernels.pin_cpu_kernels(env, machine=machine, flags=flags) == {}
    assert env == before


def test_a_process_that_ran_torch_first_is_told_its_kernels_differ():
    pinned = dict(cpu_kernels.PINNED_KERNELS)
    assert cpu_kernels.unpinned_warning("AVX2", pinned) == ""
    assert "AVX512" in cpu_kernels.unpinned_warning("AVX512", pinned)
    # A user's own kernel choice or the opt-out is not a mistake to warn about.
    assert cpu_kernels.unpinned_warning("AVX512", {**pinned, "MKL_CBWR": "AUTO"}) == ""
    opted_out = {**pinned, cpu_kernels.NATIVE_ENV: "native"}
    assert cpu_kernels.unpinned_warning("AVX512", opted_out) == ""


def test_pretraining_forces_the_vendor_independent_kernels_over_a_users_own():
    env = cpu_kernels.pretraining_env(
        {"MKL_CBWR": "AVX512", "ATEN_CPU_CAPABILITY": "avx512", "HOME": "/h"},
        machine="x86_64",
        flags=AVX2,
    )
    assert env == {**cpu_kernels.BASE_KERNELS, "HOME": "/h"}
    assert env["MKL_CBWR"] == "COMPATIBLE"
    native = {cpu_kernels.NATIVE_ENV: "native", "MKL_CBWR": "AVX512"}
    assert cpu_kernels.pretraining_env(native, machine="x86_64", flags=AVX2) == native
    assert cpu_kernels.pretraining_env({}, machine="aarch64", flags=AVX2) == {}


def test_the_base_kernels_are_part_of_the_base_fingerprint(monkeypatch):
    spec = tiny_spec.TINY_BASES["smoke"]
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_kernels, "cpu_flags", lambda: AVX2)
    monkeypatch.delenv(cpu_kernels.NATIVE_ENV, raising=False)
    pinned = tiny.base_fingerprint(spec)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")  # a run's choice: no matter
    assert tiny.base_fingerprint(spec) == pinned
    monkeypatch.setenv(cpu_kernels.NATIVE_ENV, "native")
    assert tiny.base_fingerprint(spec) != pinned


def _x86_with_avx2() -> bool:
    machine = platform.machine().lower()
    flags = cpu_kernels.cpu_flags()
    return machine in cpu_kernels.X86_MACHINES and cpu_kernels.REQUIRED_FLAGS <= flags


def test_importing_fcit_flower_first_puts_torch_on_its_avx2_kernels():
    if not _x86_with_avx2():
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


def test_the_base_comes_out_the_same_whatever_kernels_the_caller_runs(
    tmp_path, monkeypatch
):
    """The child process pre-trains on the base's kernels, not the caller's."""
    if not _x86_with_avx2():
        pytest.skip("the pinned kernels are x86 AVX2 ones")
    from dataclasses import replace

    from fcit_flower.report.manifest import base_weights

    spec = replace(
        tiny_spec.TINY_BASES["smoke"],
        alignment_examples=40,
        pretrain_examples=40,
        alignment_steps=4,
        pretrain_steps=4,
    )
    plain = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO"}
    callers = [plain, {}, {**plain, cpu_kernels.NATIVE_ENV: "native"}]
    digests = []
    for caller in callers:
        for name in [*cpu_kernels.PINNED_KERNELS, cpu_kernels.NATIVE_ENV]:
            monkeypatch.delenv(name, raising=False)
        for name, value in caller.items():
            monkeypatch.setenv(name, value)
        root = tmp_path / str(len(digests))
        built = base_weights(tiny.ensure_tiny_base(spec, cache_dir=root))
        digests.append(built["weights_sha256"])
    assert digests[0] == digests[1]
    # The opted-out build runs the caller's plain kernels: these steps are enough
    # to show another kernel path in the weights, so the equality above means
    # something.
    assert digests[2] != digests[0]
