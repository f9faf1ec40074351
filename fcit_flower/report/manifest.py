"""The reproducibility manifest of a run (``manifest.json``).

What is needed to reproduce or compare a run: the fully resolved config, the seeds,
the versions of the packages that decide the numbers, the app's git commit, the
device, and a SHA-256 fingerprint of each task's train and test file.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from fcit_flower.cpu_kernels import kernel_settings

PACKAGES = ("flwr", "torch", "transformers", "peft", "datasets", "numpy")
SEED_KEYS = ("seed", "data-seed")
# Keys that may differ between the runs of one comparison.
PER_RUN_KEYS = frozenset({"method", "seed", "run-name", "results-dir"})


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None when absent) and of Python."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def git_commit(directory: Path) -> str | None:
    """The commit checked out at ``directory`` (``-dirty`` if modified), or None."""
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(directory),
                "status",
                "--porcelain",
                "--untracked-files=no",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head or None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_weights(
    path: str | Path, *, max_hash_bytes: int | None = 1 << 30
) -> dict[str, Any]:
    """The base model a run used: its path and the SHA-256 of its weight files.

    Weight files (``*.safetensors``, ``*.bin``) up to ``max_hash_bytes`` in all
    (1 GiB; ``None``: any size) are hashed, so two runs can tell whether they
    trained the same tiny base; larger checkpoints (7B) list file sizes only, since
    hashing them would cost minutes per run (``fcit-flower base`` hashes them).
    """
    folder = Path(path)
    files = sorted(
        f for pattern in ("*.safetensors", "*.bin") for f in folder.glob(pattern)
    )
    sizes = {f.name: f.stat().st_size for f in files}
    out: dict[str, Any] = {"path": str(folder), "weight_bytes": sizes}
    if files and (max_hash_bytes is None or sum(sizes.values()) <= max_hash_bytes):
        out["weights_sha256"] = {f.name: file_sha256(f) for f in files}
    return out


def combined_digest(digests: Mapping[str, str]) -> str:
    """One SHA-256 over every weight file's name and digest (sorted by name)."""
    text = "".join(f"{name}:{digests[name]}\n" for name in sorted(digests))
    return hashlib.sha256(text.encode()).hexdigest()


def weights_fingerprint(path: str | Path) -> str:
    """What a site reports of its base: one digest of its weight files.

    The combined SHA-256 of the files (as ``fcit-flower base`` prints it) when
    :func:`base_weights` hashes them; for larger checkpoints ``sizes:`` and a
    digest of the files' names and sizes (hashing 14 GB per run would cost minutes).
    """
    info = base_weights(path)
    if "weights_sha256" in info:
        return combined_digest(info["weights_sha256"])
    sizes = {name: str(size) for name, size in info["weight_bytes"].items()}
    return f"sizes:{combined_digest(sizes)}"


def model_fingerprint(base_path: str | Path, encoder_path: str = "") -> str:
    """What every site must share: the base's weights (and the CLIP encoder's).

    ``encoder_path``: the CLIP checkpoint identity tokens come from, if any.
    """
    base = weights_fingerprint(base_path)
    return f"{base}+clip:{weights_fingerprint(encoder_path)}" if encoder_path else base


def data_fingerprints(
    root: Path, tasks: Iterable[str], splits: Sequence[str] = ("train", "test")
) -> dict[str, dict[str, str | None]]:
    """Per task, the SHA-256 of its ``splits`` files under ``root``.

    A file that cannot be found gives ``None`` (the run itself reports the error).
    """
    from fcit_flower.tasks.fcit_data import locate

    out: dict[str, dict[str, str | None]] = {}
    for task in tasks:
        out[task] = {}
        for split in splits:
            try:
                path, _ = locate(root, task, split)  # type: ignore[arg-type]
                out[task][split] = file_sha256(path)
            except (OSError, ValueError):
                out[task][split] = None
    return out


def device_info() -> dict[str, Any]:
    """The machine: platform, CPU count, and the accelerator torch would use."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": _cpu_count(),
        "device": "cpu",
        "cpu_kernels": kernel_settings(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if torch is not None and torch.cuda.is_available():
        info["device"] = "cuda"
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def build_manifest(
    config: Mapping[str, Any],
    *,
    data_root: Path,
    tasks: Iterable[str],
    app_dir: Path,
    base_path: str | Path | None = None,
) -> dict[str, Any]:
    """Everything needed to reproduce the run, as a JSON-ready dict.

    Parameters
    ----------
    config : Mapping
        The fully resolved run-config (kebab-case keys).
    data_root : Path
        The data root the run reads.
    tasks : Iterable[str]
        The tasks of the run's schedule.
    app_dir : Path
        The app's directory (for its git commit).
    base_path : str or Path, optional
        The base model's folder (:func:`base_weights`).

    Returns
    -------
    dict
        ``config``, ``seeds``, ``versions``, ``git_commit``, ``device``,
        ``data_root``, ``data_fingerprints`` and, with ``base_path``, ``base``.
    """
    base = {} if base_path is None else {"base": base_weights(base_path)}
    return {
        "config": dict(config),
        "seeds": {k: config.get(k) for k in SEED_KEYS},
        "versions": package_versions(),
        "git_commit": git_commit(app_dir),
        "device": device_info(),
        "data_root": str(data_root),
        "data_fingerprints": data_fingerprints(data_root, tasks),
        **base,
    }


def fill_git_commit(manifest_path: Path, app_dir: Path) -> None:
    """Record ``app_dir``'s commit in a manifest that has none.

    Under ``flwr run`` the ServerApp imports the app from the installed FAB, which
    is no git checkout; the submitting side knows the checkout it submitted.
    """
    import json

    from fcit_flower.results import atomic_write_json

    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return
    if manifest.get("git_commit") is None:
        commit = git_commit(app_dir)
        if commit is not None:
            manifest["git_commit"] = commit
            manifest["git_commit_of"] = f"{app_dir} (the app submitted to flwr run)"
            atomic_write_json(manifest_path, manifest)


def manifest_differences(manifests: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Warnings for runs of one comparison that differ beyond method and seed.

    Parameters
    ----------
    manifests : Mapping[str, Mapping]
        Run name -> its manifest.

    Returns
    -------
    list[str]
        One line per difference: config keys (other than method, seed, run name and
        results directory), data fingerprints, base weights, package versions, git
        commit.
    """
    if len(manifests) < 2:
        return []
    names = list(manifests)
    reference_name, reference = names[0], manifests[names[0]]
    warnings = []
    for name in names[1:]:
        other = manifests[name]
        ref_cfg, cfg = reference.get("config", {}), other.get("config", {})
        for key in sorted(set(ref_cfg) | set(cfg)):
            if key not in PER_RUN_KEYS and ref_cfg.get(key) != cfg.get(key):
                warnings.append(
                    f"config {key!r}: {reference_name}={ref_cfg.get(key)!r}, "
                    f"{name}={cfg.get(key)!r}"
                )
        ref_data = reference.get("data_fingerprints", {})
        data = other.get("data_fingerprints", {})
        for task in sorted(set(ref_data) | set(data)):
            if ref_data.get(task) != data.get(task):
                warnings.append(
                    f"data of task {task!r} differs between {reference_name} and "
                    f"{name} (sha256 of train/test files)"
                )
        ref_base = reference.get("base", {}).get("weights_sha256")
        base = other.get("base", {}).get("weights_sha256")
        if ref_base and base and ref_base != base:
            warnings.append(
                f"base model weights differ between {reference_name} and {name} "
                "(sha256 of the weight files)"
            )
        for field in ("versions", "git_commit"):
            if reference.get(field) != other.get(field):
                warnings.append(
                    f"{field} differ: {reference_name}={reference.get(field)!r}, "
                    f"{name}={other.get(field)!r}"
                )
    return warnings
