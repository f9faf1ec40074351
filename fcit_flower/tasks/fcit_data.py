"""Readers of FCIT data: the simple layout and the released FCIT layout.

- Simple: ``<root>/<task>/train.json`` and ``<root>/<task>/test.json``, images
  relative to ``<root>`` (or ``image_root``).
- Released: ``<root>/instructions/<Dataset>/<train file>`` and ``.../test.json``
  (IconQA: ``val.json``), images relative to ``<root>/datasets``.

Train records are LLaVA conversations, test records ``question_id, image, text,
answer``; JSON lists or JSON lines (UTF-8). A record is bad when its JSON line does
not parse, a field is missing, null, not a string or longer than
:data:`~fcit_flower.tasks.record_checks.MAX_TEXT_CHARS`, or its image is missing or
does not decode. A few bad records are skipped and counted; more than
``max_bad_fraction`` stops with a :class:`DataError` naming file, record and field.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fcit_flower.tasks.catalog import TASKS
from fcit_flower.tasks.record_checks import image_problem, read_text_file, text_field

log = logging.getLogger(__name__)

# The released layout, instructions/<folder>/<file>: the folder is the catalog's
# FCIT name of the task and the files are train.json / test.json, except where
# named here.
_RELEASED_FOLDERS = {"flickr30k": "Flickr30k-cap", "ocr-vqa": "OCRVQA"}
_RELEASED_FILES = {
    ("grounding", "train"): "train_11w.json",
    ("arxivqa", "train"): "train_4w.json",
    ("clevr-math", "train"): "train_4w.json",
    ("flickr30k", "train"): "train_brief_4w.json",
    ("ocr-vqa", "train"): "train_10w.json",
    ("iconqa", "test"): "val.json",
}


class DataError(ValueError):
    """Bad or missing FCIT data; the message names the file, record and field."""


@dataclass(frozen=True)
class Sample:
    """One instruction sample.

    Attributes
    ----------
    id : str
        Record id (``id`` or ``question_id``).
    image : Path
        Absolute image path.
    question : str
        Instruction without the ``<image>`` token.
    answer : str
        Reference answer.
    phrasing : str
        Evaluation records only, when the data says so: ``train`` when the
        instruction uses a phrasing that training also uses, ``heldout`` when not
        (mini-FCIT writes it); empty otherwise.
    """

    id: str
    image: Path
    question: str
    answer: str
    phrasing: str = ""


Split = Literal["train", "val", "test"]
PHRASINGS = ("train", "heldout")


def locate(root: Path, task: str, split: Split) -> tuple[Path, Path]:
    """(JSON file, image root) of ``task``'s ``split`` in either layout.

    Simple-layout folders may carry the catalog name (``imagenet-r``) or the FCIT
    name (``ImageNet-R``). A ``val`` split (test-format records, for choosing
    hyper-parameters) exists only where the simple layout has ``val.json``.
    """
    simple = root / task / f"{split}.json"
    if simple.exists():
        return simple, root
    if task in TASKS:
        named = root / TASKS[task].fcit_name / f"{split}.json"
        if named.exists():
            return named, root
    released = released_file(root, task, split)
    if released is not None and released.exists():
        return released, root / "datasets"
    expected = [str(p) for p in (simple, released) if p is not None]
    raise DataError(f"{task}: no {split} file; looked for {' and '.join(expected)}")


def released_file(root: Path, task: str, split: Split) -> Path | None:
    """Where the released FCIT layout keeps ``task``'s ``split``.

    Returns
    -------
    Path or None
        The JSON file under ``root / "instructions"`` (it may not exist), or None
        for a task outside the catalog and for the ``val`` split, which the
        released layout does not have.
    """
    if task not in TASKS or split == "val":
        return None
    folder = _RELEASED_FOLDERS.get(task, TASKS[task].fcit_name)
    name = _RELEASED_FILES.get((task, split), f"{split}.json")
    return root / "instructions" / folder / name


class _BadLine:
    """A JSON-lines record that did not parse (counted as a bad record)."""

    def __init__(self, message: str):
        self.message = message


def _read_records(path: Path) -> list[Any]:
    try:
        text = read_text_file(path, "data file")
    except ValueError as error:
        raise DataError(str(error)) from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}: malformed JSON at line {error.lineno}: {error.msg}"
            ) from None
        except RecursionError:
            raise DataError(f"{path}: JSON nested too deeply") from None
        return list(data)
    records: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                records.append(_BadLine(f"malformed JSON line {number}: {error.msg}"))
            except RecursionError:
                records.append(_BadLine(f"JSON line {number} nested too deeply"))
    return records


def _parse(
    record: Any, split: str, image_root: Path
) -> tuple[str, Path, str, str, str]:
    if isinstance(record, _BadLine):
        raise ValueError(record.message)
    if not isinstance(record, dict):
        raise ValueError("record is not an object")
    if "image" not in record:
        raise ValueError("missing field 'image'")
    name = text_field("image", record["image"])
    if not name.strip() or "\x00" in name:
        raise ValueError(f"field 'image' is not a file name: {name!r}")
    if split == "train":
        turns = record.get("conversations")
        if not isinstance(turns, list) or len(turns) < 2:
            raise ValueError("missing field 'conversations' (two turns needed)")
        human = next((t for t in turns if t.get("from") == "human"), None)
        gpt = next((t for t in turns if t.get("from") == "gpt"), None)
        if human is None or gpt is None or "value" not in human or "value" not in gpt:
            raise ValueError("'conversations' lacks a human or gpt turn with 'value'")
        question = text_field("conversations[human].value", human["value"])
        answer = text_field("conversations[gpt].value", gpt["value"])
        ident = str(record.get("id", ""))
    else:
        for field in ("text", "answer"):
            if field not in record:
                raise ValueError(f"missing field {field!r}")
        question = text_field("text", record["text"])
        answer = text_field("answer", record["answer"])
        ident = str(record.get("question_id", ""))
    image = image_root / name
    problem = image_problem(image)
    if problem is not None:
        raise ValueError(f"field 'image': {problem}")
    question = question.replace("<image>", "").strip()
    if not question or not answer.strip():
        raise ValueError("empty question or answer")
    phrasing = record.get("phrasing", "") if split != "train" else ""
    phrasing = phrasing if isinstance(phrasing, str) and phrasing in PHRASINGS else ""
    return ident, image.resolve(), question, answer.strip(), phrasing


def load_split(
    root: Path,
    task: str,
    split: Split,
    *,
    image_root: Path | None = None,
    max_bad_fraction: float = 0.05,
) -> list[Sample]:
    """Read one task split.

    Bad records (missing, null or overlong fields, an image that is missing or does
    not decode, a malformed JSON line) are skipped and counted; more than
    ``max_bad_fraction`` of them stops with the first one named.

    Raises
    ------
    DataError
        Missing files, malformed JSON, or more bad records than allowed.
    """
    if not root.is_dir():
        raise DataError(f"data root {root} is not a directory")
    path, default_images = locate(root, task, split)
    images = image_root or default_images
    samples, bad = [], []
    for index, record in enumerate(_read_records(path)):
        try:
            ident, image, question, answer, phrasing = _parse(record, split, images)
        except (ValueError, AttributeError) as error:
            bad.append(f"{path}: record {index}: {error}")
            continue
        samples.append(
            Sample(
                ident or f"{task}-{split}-{index}", image, question, answer, phrasing
            )
        )
    total = len(samples) + len(bad)
    if bad:
        if total == 0 or len(bad) > max_bad_fraction * total:
            raise DataError(
                f"{bad[0]} ({len(bad)} of {total} records bad, more than "
                f"max-bad-fraction={max_bad_fraction:g})"
            )
        log.warning("%s: skipped %d bad records, first: %s", path, len(bad), bad[0])
    if not samples:
        raise DataError(f"{path}: no usable records")
    return samples
