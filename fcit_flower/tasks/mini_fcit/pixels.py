"""Pixel-content hashes: what "the same image" means for mini-FCIT's clean splits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image


def pixel_hash(pixels: np.ndarray) -> str:
    """Hash of decoded RGB pixels and their shape (not of a file's bytes)."""
    array = np.ascontiguousarray(pixels, dtype=np.uint8)
    digest = hashlib.blake2b(array.tobytes(), digest_size=12)
    digest.update(str(array.shape).encode())
    return digest.hexdigest()


def file_pixel_hash(path: Path) -> str:
    """:func:`pixel_hash` of an image file, decoded to RGB."""
    with Image.open(path) as image:
        return pixel_hash(np.asarray(image.convert("RGB"), dtype=np.uint8))
