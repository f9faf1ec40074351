"""Round checkpoints of a run: atomic, bounded, and verified on load (pure numpy).

A checkpoint is one ``.npz`` file in ``<run-dir>/checkpoints/``: the arrays of the
server state (global adapters or subspaces, DISCO tokens, server-optimizer moments)
plus a JSON document (stage and round counters, accuracy rows so far, strategy
bookkeeping, the run-config) stored as the ``__meta__`` byte array. It is written to a
temporary file, fsynced and renamed, so a crash leaves either the old or the new file,
never a half-written one under a checkpoint name. A file that is damaged anyway (a
truncated copy, a full disk) fails the zip CRC check on load and the next older one is
used, with a warning.

No random-number-generator state is saved because the run has none that carries
over: client sampling, fault injection, fresh subspaces and local training are all
seeded from (seed, stage, round, client), so the checkpoint's counters restore them.
The one seed that is not in the run-config, the secret noise seed of a run with
differential privacy, is in the strategy bookkeeping (with the privacy accountant).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcit_flower.results import atomic_write

META_KEY = "__meta__"
_NAME = re.compile(r"^ckpt-(\d{5})-s(\d+)-r(\d+)(-end)?\.npz$")

# Run-config keys that ``fcit-flower resume`` may override: how to wait and retry,
# how many checkpoints to keep, and fault injection (switched off only). None of
# them changes what a completed run computes (``export`` only adds files).
OPERATIONAL_KEYS = frozenset(
    {"round-timeout", "checkpoint-keep", "max-round-retries", "fault-rate", "export"}
    | {"site-nodes"}  # a site that re-registered its key has a new node id
)
# Keys that may change between a crash and its resume: the operational ones, and
# where the run directory lives (it may have been moved).
RESUMABLE_CHANGES = OPERATIONAL_KEYS | {"resume", "results-dir", "run-name"}
# Run-config keys holding file or directory paths: stored absolute in checkpoints,
# so that a run resumed from another working directory finds its data.
PATH_KEYS = (
    "data-root",
    "image-root",
    "schedule-file",
    "model-path",
    "identity-encoder-path",
)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used to resume this run."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: where it came from, its arrays and its metadata."""

    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def checkpoint_name(sequence: int, stage: int, server_round: int, end: bool) -> str:
    """File name of a checkpoint (sorts by ``sequence``)."""
    suffix = "-end" if end else ""
    return f"ckpt-{sequence:05d}-s{stage}-r{server_round}{suffix}.npz"


def absolute_paths(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every non-empty :data:`PATH_KEYS` value made absolute.

    Relative paths are resolved against the current directory (``~`` expanded).
    """
    out = dict(values)
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value:
            out[key] = str(Path(value).expanduser().resolve())
    return out


def config_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any]
) -> list[str]:
    """Run-config keys whose values differ, ignoring :data:`RESUMABLE_CHANGES`.

    Paths are compared as absolute paths (:func:`absolute_paths`).
    """
    saved, current = absolute_paths(saved), absolute_paths(current)
    keys = (set(saved) | set(current)) - RESUMABLE_CHANGES
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def difference_details(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """The keys of :func:`config_differences` as ``"key: saved -> current, ..."``."""
    return ", ".join(
        f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
        for k in config_differences(saved, current)
    )


class CheckpointStore:
    """The checkpoints of one run directory.

    Parameters
    ----------
    directory : Path
        Where the checkpoint files live (created on first save).
    keep : int
        Round checkpoints kept besides the stage-end ones (which are all kept, so
        disk use is bounded by ``keep + number of stages``).
    """

    def __init__(self, directory: Path, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def files(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: int(_NAME.match(p.name)[1]))  # type: ignore[index]

    def save(
        self,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        *,
        stage: int,
        server_round: int,
        end: bool,
    ) -> Path:
        """Write a checkpoint atomically, then prune old round checkpoints."""
        if META_KEY in arrays:
            raise ValueError(f"array key {META_KEY!r} is reserved")
        existing = self.files()
        sequence = int(_NAME.match(existing[-1].name)[1]) + 1 if existing else 0  # type: ignore[index]
        path = self.directory / checkpoint_name(sequence, stage, server_round, end)
        payload = dict(arrays)
        payload[META_KEY] = np.frombuffer(
            json.dumps(dict(meta)).encode("utf-8"), dtype=np.uint8
        )
        atomic_write(path, lambda handle: np.savez(handle, **payload))  # type: ignore[arg-type]
        self.prune()
        return path

    def prune(self) -> None:
        """Delete round checkpoints beyond the newest ``keep`` (stage ends stay)."""
        rounds = [p for p in self.files() if not p.name.endswith("-end.npz")]
        for path in rounds[: max(len(rounds) - self.keep, 0)]:
            path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete every checkpoint (a fresh run must not resume an older one)."""
        for path in self.files():
            path.unlink(missing_ok=True)

    def latest(self, warn: Any = None) -> Checkpoint | None:
        """The newest checkpoint that loads and verifies, or ``None``.

        Parameters
        ----------
        warn : Callable[[str], None], optional
            Called with a message for every damaged file skipped.
        """
        for path in reversed(self.files()):
            try:
                return load_checkpoint(path)
            except CheckpointError as error:
                if warn is not None:
                    warn(f"{error}; falling back to the previous checkpoint")
        return None


def load_checkpoint(path: Path) -> Checkpoint:
    """Load and verify one checkpoint file.

    Raises
    ------
    CheckpointError
        If the file is unreadable, truncated, fails its CRC check or lacks metadata.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.array(data[k]) for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"checkpoint {path} is damaged ({error})") from None
    if META_KEY not in arrays:
        raise CheckpointError(f"checkpoint {path} has no {META_KEY!r} entry")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {path}: bad metadata ({error})") from None
    return Checkpoint(path=Path(path), arrays=arrays, meta=meta)
