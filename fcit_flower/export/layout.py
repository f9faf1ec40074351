"""Layout of a run's exports, stage lookup, atomic folder writes, the model card.

A run directory holds one folder per exported stage::

    adapters/stage-<k>/            k = 1..num-stages (after stage k)
      README.md                    model card
      export.json                  method, stage, tasks seen, accuracy row, format,
                                   base, prompt format
      run_config.json              the run's config
      base/                        the tiny base itself (tiny model only)
      adapter_config.json, adapter_model.safetensors     PEFT methods
      subspace-<slot>/, router.json, router.safetensors  DISCO
      arrays.safetensors, arrays.json                    MoELoRA (and others)

Plain data only (no torch): the CLI reads it to name what is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ADAPTERS = "adapters"
EXPORT_JSON = "export.json"
RUN_CONFIG_JSON = "run_config.json"
CARD = "README.md"
BASE_DIR = "base"
EXPORT_MODES = ("every-stage", "final", "off")
_STAGE = re.compile(r"^stage-(\d+)$")


class ExportError(ValueError):
    """A run directory, stage or export folder that cannot be used (bad input)."""


def stage_dir(run_dir: Path, stage: int) -> Path:
    """The export folder after stage ``stage`` (1-based, as the matrix rows)."""
    return run_dir / ADAPTERS / f"stage-{stage}"


def exported_stages(run_dir: Path) -> list[int]:
    """The stages (1-based) whose export folder is complete, in order."""
    folder = run_dir / ADAPTERS
    if not folder.is_dir():
        return []
    stages = []
    for child in folder.iterdir():
        match = _STAGE.match(child.name)
        if match and (child / EXPORT_JSON).is_file():
            stages.append(int(match.group(1)))
    return sorted(stages)


def should_export(mode: str, stage: int, num_stages: int) -> bool:
    """Whether the ``export`` mode writes stage ``stage`` (0-based)."""
    if mode == "every-stage":
        return True
    return mode == "final" and stage == num_stages - 1


def find_export(run_dir: Path, stage: int | None = None) -> Path:
    """The export folder of ``stage`` (default: the last exported one).

    Raises
    ------
    ExportError
        When the run directory does not exist or has no export of that stage.
    """
    if not run_dir.is_dir():
        raise ExportError(f"--run {str(run_dir)!r} is not a directory")
    stages = exported_stages(run_dir)
    if not stages:
        raise ExportError(
            f"--run {str(run_dir)!r} has no exported model ({ADAPTERS}/stage-<k>/); "
            "run it with export = 'every-stage' or 'final'"
        )
    if stage is None:
        return stage_dir(run_dir, stages[-1])
    if stage not in stages:
        raise ExportError(
            f"--stage {stage} was not exported in {str(run_dir)!r}; "
            f"exported stages: {stages}"
        )
    return stage_dir(run_dir, stage)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises
    ------
    ExportError
        When the file is missing, not JSON or not an object.
    """
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: cannot be read as JSON ({error})") from None
    if not isinstance(payload, dict):
        raise ExportError(f"{path}: not a JSON object")
    return payload


def write_json(path: Path, payload: Any) -> None:
    """Indented JSON with a final newline (stable bytes for stable input)."""
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def write_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Build ``target`` by ``fill(staging)`` in a sibling temp folder, then rename.

    Readers see the old folder or the new one, never a partial one; an existing
    folder (a resumed run exporting a stage again) is moved aside first and
    removed after the rename.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*"):  # left by a crash
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    old = target.parent / f".{target.name}.old"
    try:
        fill(staging)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def model_card(info: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The export's ``README.md``: what it is, how it scored, how to load it.

    Parameters
    ----------
    info : Mapping
        The contents of ``export.json``.
    config : Mapping
        The run-config (kebab-case keys).

    Returns
    -------
    str
        Markdown.
    """
    stage, stages = info["stage"], info["num_stages"]
    row = info["accuracy_row"]
    lines = [
        f"# {info['method']} after stage {stage} of {stages} (fcit-flower)",
        "",
        f"- base: `{info['base']['name']}` ({info['base']['kind']})",
        f"- method: `{info['method']}`, format: `{info['format']['kind']}`",
        f"- tasks seen (stages 1-{stage}): {', '.join(info['tasks_seen'])}",
        "",
        "## Accuracy after this stage",
        "",
        "| " + " | ".join(row) + " |",
        "|" + "---|" * len(row),
        "| " + " | ".join(f"{v:.2f}" for v in row.values()) + " |",
        "",
        "## Loading",
        "",
        *_loading_lines(info),
        "",
        "## Prompt",
        "",
        f"`{info['prompt']['template']}`, {info['prompt']['num_image_tokens']} "
        f"image tokens, images resized to {info['prompt']['image_size']} pixels "
        f"and normalised with mean {info['prompt']['image_mean']} and std "
        f"{info['prompt']['image_std']}; greedy decoding of up to "
        f"{config.get('max-new-tokens')} tokens.",
        "",
        "## Data fingerprint (SHA-256 of each task's train and test file)",
        "",
        *_fingerprint_lines(info.get("data_fingerprints", {})),
        "",
        "## Package versions",
        "",
        ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()),
        "",
        "## Run config",
        "",
        "```toml",
        *(f"{k} = {json.dumps(v)}" for k, v in config.items()),
        "```",
        "",
    ]
    return "\n".join(lines)


def _loading_lines(info: Mapping[str, Any]) -> Sequence[str]:
    kind = info["format"]["kind"]
    base = info["base"]["name"]
    base = "<this folder>/base" if base == BASE_DIR else base
    if kind == "peft":
        return [
            "A stock PEFT LoRA adapter (no fcit-flower needed):",
            "",
            "```python",
            "import torch",
            "from peft import PeftModel",
            "from transformers import LlavaForConditionalGeneration",
            f'base = LlavaForConditionalGeneration.from_pretrained("{base}", '
            "dtype=torch.float32)",
            'model = PeftModel.from_pretrained(base, "<this folder>")',
            "```",
        ]
    if kind == "disco":
        return [
            "One stock PEFT adapter per subspace (`subspace-<slot>/`) and the router "
            "(`router.json`, `router.safetensors`: one identity token per slot). "
            "Subspace Selective Activation mixes the subspaces per input:",
            "",
            "```bash",
            "fcit-flower predict --run RUN_DIR --stage K --image x.png "
            '--question "..."',
            "```",
        ]
    return [
        "The global arrays in `arrays.safetensors` (layout in `arrays.json`); "
        "load them with `fcit-flower predict` / `evaluate`, or "
        "`fcit_flower.export.use.load_export`.",
    ]


def _fingerprint_lines(prints: Mapping[str, Mapping[str, str | None]]) -> list[str]:
    return [
        f"- {task}: train `{(p.get('train') or '-')[:16]}`, "
        f"test `{(p.get('test') or '-')[:16]}`"
        for task, p in prints.items()
    ]
