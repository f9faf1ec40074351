"""``fcit-flower predict`` and ``fcit-flower evaluate``: use an exported model.

- ``predict --run DIR [--stage K] --image PATH --question TEXT`` prints the answer
  (DISCO: and the subspace weights SSA gave the question); ``--batch FILE`` reads
  JSON lines ``{"image": ..., "question": ...}`` (relative images: from the file's
  folder) and prints one JSON line per question.
- ``evaluate --run DIR [--stage K] --data-root PATH [--tasks a,b] [--out DIR]``
  scores the export on FCIT-format data and writes the run's metrics files.

Bad input raises :class:`~fcit_flower.export.layout.ExportError` (a ``ValueError``:
the CLI prints one line and exits 2).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fcit_flower.export.layout import ExportError

Command = Callable[[argparse.Namespace], int]


def add_commands(sub: Any) -> None:
    """Add ``predict`` and ``evaluate`` to the CLI's sub-parsers (see COMMANDS)."""
    pre = sub.add_parser("predict", help="answer questions with an exported model")
    _add_export_options(pre)
    pre.add_argument("--image", help="the image file")
    pre.add_argument("--question", help="the instruction")
    pre.add_argument(
        "--batch",
        help='JSON lines {"image": ..., "question": ...}; one JSON answer per line',
    )
    ev_ = sub.add_parser("evaluate", help="score an exported model on FCIT-format data")
    _add_export_options(ev_)
    ev_.add_argument("--data-root", required=True, help="FCIT-format data directory")
    ev_.add_argument("--tasks", default="", help="comma-separated (default: the run's)")
    ev_.add_argument(
        "--out", default="", help="output directory (default: DIR/evaluations/...)"
    )


def _add_export_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--run", required=True, help="the run's results directory")
    command.add_argument(
        "--stage", type=int, default=None, help="exported stage (default: the last)"
    )


def predict_command(args: argparse.Namespace) -> int:
    """The ``predict`` command."""
    from fcit_flower.export.use import check_image, load_export, predict

    if args.batch:
        if args.image or args.question:
            raise ExportError("give --batch, or --image with --question, not both")
        questions = read_batch(Path(args.batch))
    elif args.image is None or args.question is None:
        raise ExportError("predict needs --image and --question (or --batch FILE)")
    else:
        questions = [(check_image(Path(args.image), "--image"), args.question)]
    loaded = load_export(Path(args.run), args.stage)
    predictions = predict(loaded, questions)
    if not args.batch:
        print(predictions[0].answer)
        if predictions[0].weights:
            weights = "  ".join(
                f"{slot}: {w:.4f}" for slot, w in enumerate(predictions[0].weights)
            )
            print(f"subspace weights: {weights}")
        return 0
    for (image, question), prediction in zip(questions, predictions, strict=True):
        line: dict[str, Any] = {
            "image": str(image),
            "question": question,
            "answer": prediction.answer,
        }
        if prediction.weights:
            line["subspace_weights"] = prediction.weights
        print(json.dumps(line))
    return 0


def read_batch(path: Path) -> list[tuple[Path, str]]:
    """``(image, question)`` pairs of a JSON-lines file, every image checked.

    ``question`` may also be called ``text`` (the FCIT test format).
    """
    from fcit_flower.export.use import check_image

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ExportError(f"--batch {str(path)!r}: {error}") from None
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"--batch {path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ExportError(f"{where}: not JSON ({error.msg})") from None
        question = (
            record.get("question", record.get("text"))
            if isinstance(record, dict)
            else None
        )
        image = record.get("image") if isinstance(record, dict) else None
        if not isinstance(image, str) or not isinstance(question, str):
            raise ExportError(f"{where}: needs string fields 'image' and 'question'")
        pairs.append((check_image(path.parent / image, f"{where} image"), question))
    if not pairs:
        raise ExportError(f"--batch {str(path)!r} holds no question")
    return pairs


def evaluate_command(args: argparse.Namespace) -> int:
    """The ``evaluate`` command."""
    from fcit_flower.export.use import evaluate, load_export

    root = Path(args.data_root).expanduser()
    if not root.is_dir():
        raise ExportError(f"--data-root {str(root)!r} is not a directory")
    loaded = load_export(Path(args.run), args.stage, data_root=root)
    out = (
        Path(args.out)
        if args.out
        else Path(args.run)
        / "evaluations"
        / f"stage-{loaded.info['stage']}-{root.resolve().name}"
    )
    tasks = tuple(t for t in args.tasks.split(",") if t)
    metrics = evaluate(loaded, out, tasks)
    row = metrics["accuracy_matrix"][0]
    for task, value in zip(metrics["tasks"], row, strict=True):
        print(f"{task}: {value:.2f}")
    print(f"mean {sum(row) / len(row):.2f}  ({out})")
    return 0


# The handlers of the commands :func:`add_commands` adds.
COMMANDS: dict[str, Command] = {
    "predict": predict_command,
    "evaluate": evaluate_command,
}
