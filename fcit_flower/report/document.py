"""Report documents: blocks rendered as Markdown and as self-contained HTML.

A report is a list of blocks (heading, paragraph, table, image, list, code) rendered
twice: to Markdown with relative image links, and to HTML with the images embedded
as base64 PNGs (one file that opens anywhere).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcit_flower.results import atomic_write_text

PLOTS_DIR = "plots"


class ReportError(ValueError):
    """A directory cannot be reported on (no results in it, or damaged ones)."""


# What a damaged results file can raise while a report is built from it: a run
# named with one of these is skipped when a whole tree is reported.
REPORT_FAILURES = (ValueError, TypeError, KeyError, AttributeError, OSError)


@dataclass(frozen=True)
class Link:
    """A table cell linking to another report (``.md``; ``.html`` in HTML)."""

    text: str
    target: str


@dataclass
class Report:
    """Blocks of a report; ``base`` is the directory image paths are relative to."""

    base: Path
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Add a heading."""
        self.blocks.append(("heading", (level, text)))

    def text(self, text: str) -> None:
        """Add a paragraph (plain text, no markup)."""
        self.blocks.append(("text", text))

    def table(self, header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> None:
        """Add a table."""
        self.blocks.append(("table", ([str(h) for h in header], rows)))

    def image(self, path: Path, alt: str) -> None:
        """Add a PNG (a file under ``base``)."""
        self.blocks.append(("image", (path, alt)))

    def items(self, lines: Sequence[str]) -> None:
        """Add a bullet list."""
        self.blocks.append(("items", list(lines)))

    def code(self, text: str) -> None:
        """Add preformatted text."""
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        """The report as Markdown; images are links relative to ``base``."""
        out = []
        for kind, value in self.blocks:
            if kind == "heading":
                out.append(f"{'#' * value[0]} {value[1]}")
            elif kind == "text":
                out.append(value)
            elif kind == "table":
                header, rows = value
                lines = [
                    "| " + " | ".join(_md_cell(h) for h in header) + " |",
                    "|" + "---|" * len(header),
                ]
                lines += [
                    "| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows
                ]
                out.append("\n".join(lines))
            elif kind == "image":
                path, alt = value
                out.append(f"![{alt}]({path.relative_to(self.base).as_posix()})")
            elif kind == "items":
                out.append("\n".join(f"- {line}" for line in value))
            elif kind == "code":
                out.append(f"```\n{value}\n```")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        """The report as one HTML page with the images embedded (base64 PNG)."""
        body = []
        for kind, value in self.blocks:
            if kind == "heading":
                body.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "text":
                body.append(f"<p>{html.escape(value)}</p>")
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                cells = "".join(
                    "<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in r) + "</tr>"
                    for r in rows
                )
                body.append(f"<table><tr>{head}</tr>{cells}</table>")
            elif kind == "image":
                path, alt = value
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{html.escape(alt)}" '
                    f'src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(alt)}</figcaption></figure>"
                )
            elif kind == "items":
                lis = "".join(f"<li>{html.escape(line)}</li>" for line in value)
                body.append(f"<ul>{lis}</ul>")
            elif kind == "code":
                body.append(f"<pre>{html.escape(value)}</pre>")
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n"
        )

    def write(self, title: str) -> Path:
        """Write ``report.md`` and ``report.html`` into ``base``; return the .md."""
        atomic_write_text(self.base / "report.html", self.html(title))
        path = self.base / "report.md"
        atomic_write_text(path, self.markdown())
        return path


_CSS = (
    "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #bbb;padding:2px 8px;text-align:left}"
    "img{max-width:100%}pre{background:#f4f4f4;padding:.5em;overflow:auto}"
)


def _md_cell(value: Any) -> str:
    if isinstance(value, Link):
        return f"[{value.text}]({value.target})"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _html_cell(value: Any) -> str:
    if isinstance(value, Link):
        target = value.target.removesuffix(".md") + ".html"
        return f'<a href="{html.escape(target)}">{html.escape(value.text)}</a>'
    return html.escape(str(value))


def read_json(path: Path) -> Any:
    """The JSON document at ``path`` (``None`` if absent).

    Raises
    ------
    ReportError
        When the file is not valid JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ReportError(f"{path}: a directory, not a JSON file") from None
    except OSError as error:
        raise ReportError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ReportError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise ReportError(f"{path}: JSON nested too deeply") from None


def read_json_object(path: Path) -> dict[str, Any] | None:
    """:func:`read_json` that must hold a JSON object (``None`` if absent).

    Raises
    ------
    ReportError
        When the file is not valid JSON or holds something other than an object.
    """
    value = read_json(path)
    if value is not None and not isinstance(value, dict):
        raise ReportError(f"{path}: holds a JSON {type(value).__name__}, not an object")
    return value


def fmt(value: Any) -> str:
    """A table cell: floats with two decimals, ``None`` as n/a."""
    if isinstance(value, float):
        return f"{value:.2f}"
    return "n/a" if value is None else str(value)
