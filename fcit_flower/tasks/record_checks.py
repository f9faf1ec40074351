"""Checks of single FCIT records: text fields, text length, images, file encoding.

Each check returns a one-line reason (or raises ``ValueError`` with one), so that
:func:`fcit_flower.tasks.fcit_data.load_split` can skip and count a bad record, or
stop naming the file, the record and the field. Images are opened and fully decoded
once per process (keyed by path, size and modification time): a corrupt PNG, a
directory or a text file under an image name is a bad record before training starts,
not a client that fails every round.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

# The longest instruction or answer accepted, in characters. Longer ones are bad
# records (skipped and counted): one 2 MB question would make a training step take
# hours, and the models see at most a few thousand tokens anyway.
MAX_TEXT_CHARS = 16_384


def text_field(name: str, value: Any) -> str:
    """``value`` as the text of field ``name``.

    Raises
    ------
    ValueError
        When ``value`` is null or not a string, or longer than
        :data:`MAX_TEXT_CHARS`.
    """
    if value is None:
        raise ValueError(f"field {name!r} is null")
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} is a {type(value).__name__}, not a string")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(
            f"field {name!r} has {len(value)} characters, more than the limit "
            f"{MAX_TEXT_CHARS}"
        )
    return value


def image_problem(path: Path) -> str | None:
    """Why the image at ``path`` cannot be used, or ``None`` when it decodes.

    Parameters
    ----------
    path : Path
        The image file.

    Returns
    -------
    str or None
        A one-line reason (missing, not a file, not a decodable image).
    """
    try:
        stat = path.stat()
    except OSError:
        return f"image file {path} does not exist"
    if not path.is_file():
        return f"image {path} is not a file"
    return _decode_problem(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=1_000_000)
def _decode_problem(path: str, size: int, mtime_ns: int) -> str | None:
    """Open and fully decode one image (cached per path, size and mtime)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    # A hostile or truncated file can fail in any way PIL has (OSError,
    # SyntaxError, ValueError, DecompressionBombError, ...): all mean "bad record".
    except Exception as error:  # noqa: BLE001
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"image {path} cannot be decoded ({reason})"
    return None


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of ``path``; errors name the file and what it is.

    Raises
    ------
    ValueError
        When the file cannot be read or is not UTF-8.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(
            f"{path}: cannot read the {what} ({error.strerror or error})"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: the {what} is not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None
