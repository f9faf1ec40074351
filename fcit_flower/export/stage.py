"""The ServerApp's export of one stage: ``adapters/stage-<k>/``, written atomically.

Everything in the folder follows from the run's config and global arrays (no wall
times, no dates), so a resumed run writes the same bytes again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fcit_flower.checkpoint import RESUMABLE_CHANGES, absolute_paths
from fcit_flower.config import RunConfig
from fcit_flower.export.layout import (
    BASE_DIR,
    CARD,
    EXPORT_JSON,
    RUN_CONFIG_JSON,
    model_card,
    stage_dir,
    write_folder,
    write_json,
)
from fcit_flower.methods.base import Method
from fcit_flower.protocol import Arrays, split_ewc
from fcit_flower.report.manifest import data_fingerprints, package_versions
from fcit_flower.runtime import Runtime
from fcit_flower.tasks.schedule import Schedule

# Run-config keys that say where and how a run was operated, not what it
# computed: a resumed (or moved) run exports the same bytes.
NOT_EXPORTED_KEYS = RESUMABLE_CHANGES


def export_stage(
    method: Method,
    config: RunConfig,
    runtime: Runtime,
    arrays: Arrays,
    *,
    schedule: Schedule,
    stage: int,
    row: Sequence[float],
) -> Path:
    """Write the export of the global ``arrays`` after ``stage`` (0-based).

    Parameters
    ----------
    method : Method
        The run's method (writes its adapter files).
    config, runtime : RunConfig, Runtime
        The run's config, base and data.
    arrays : Arrays
        The global arrays the stage's evaluation used.
    schedule : Schedule
        The run's schedule (tasks seen so far).
    stage : int
        0-based stage index; the folder is ``stage-<stage + 1>``.
    row : sequence of float
        The accuracy row after the stage (one value per schedule task).

    Returns
    -------
    Path
        The export folder.
    """
    tiny = config.model == "tiny"
    base_name = BASE_DIR if tiny else runtime.base_path
    seen = [schedule.tasks[j] for j in schedule.seen_columns()[stage]]
    run_config = {
        k: v
        for k, v in absolute_paths(config.to_mapping()).items()
        if k not in NOT_EXPORTED_KEYS
    }
    bundle = runtime.bundle
    tokenizer: Any = bundle.tokenizer

    def fill(folder: Path) -> None:
        if tiny:  # the tiny base is built here: the folder carries it
            copy_base(Path(runtime.base_path), folder / BASE_DIR)
        adapter = split_ewc(arrays)[0]
        layout = method.export_arrays(
            config, adapter, folder=folder, base_name=base_name
        )
        info = {
            "method": config.method,
            "stage": stage + 1,
            "num_stages": schedule.num_stages,
            "tasks_seen": seen,
            "accuracy_row": dict(zip(schedule.tasks, row, strict=True)),
            "format": layout,
            "base": {
                "kind": "tiny, in this folder (base/)" if tiny else config.model,
                "name": base_name,
            },
            "prompt": {
                "template": f"<bos> {tokenizer.user_tag} <image> x "
                f"{bundle.num_image_tokens} {{question}} {tokenizer.assistant_tag}",
                "encoding": "ids = [bos_id] + encode(user_tag) + [image_id] * "
                "num_image_tokens + encode(question) + encode(assistant_tag), each "
                "piece encoded without special tokens; prompts left-padded",
                "user_tag": tokenizer.user_tag,
                "assistant_tag": tokenizer.assistant_tag,
                "ids": {
                    "bos": tokenizer.bos_id,
                    "eos": tokenizer.eos_id,
                    "pad": tokenizer.pad_id,
                    "image": tokenizer.image_id,
                },
                "num_image_tokens": bundle.num_image_tokens,
                "image_size": bundle.image_size,
                "image_mean": list(bundle.image_mean),
                "image_std": list(bundle.image_std),
                "max_new_tokens": config.max_new_tokens,
            },
            "data_fingerprints": _fingerprints(config, runtime, schedule.tasks),
            "versions": package_versions(),
        }
        write_json(folder / EXPORT_JSON, info)
        write_json(folder / RUN_CONFIG_JSON, run_config)
        (folder / CARD).write_text(model_card(info, run_config), encoding="utf-8")

    target = stage_dir(config.run_dir, stage + 1)
    write_folder(target, fill)
    return target


def _fingerprints(
    config: RunConfig, runtime: Runtime, tasks: Sequence[str]
) -> dict[str, Any]:
    """The data fingerprints of the run's manifest (hashed once, at the start)."""
    try:
        manifest = json.loads((config.run_dir / "manifest.json").read_text())
        return dict(manifest["data_fingerprints"])
    except (OSError, ValueError, KeyError, TypeError):
        return data_fingerprints(runtime.root, tasks)


def copy_base(source: Path, target: Path) -> None:
    """Put the files of a base directory (weights, config, tokenizer) in ``target``.

    Hard links where the file system allows (the cached base is written once and
    never changed, and every stage of every run exports it: a copy each time would
    cost its size per stage), a copy otherwise.
    """
    target.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.is_file():
            try:
                os.link(path, target / path.name)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(path, target / path.name)
