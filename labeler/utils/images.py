"""Reading images the way people's folders hold them: upright, 8-bit RGB, whatever the file's mode.

Usage: `rgb = read_rgb("photo.jpg")` gives an (H, W, 3) uint8 array in EXIF-upright orientation.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Photos of up to 300 megapixels open without PIL's decompression-bomb warning (its default is 89);
# the limit is raised only while the labeler opens a file, not for the whole process.
MAX_PIXELS = 300_000_000
_limit_lock = threading.Lock()
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


class ImageReadError(Exception):
    """An image file that can't be decoded; the message says why."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I"):
        # 16-bit (or 32-bit integer) grey: scale to 8 bits instead of letting PIL clip at 255.
        arr = np.asarray(img).astype(np.uint32)
        if img.mode.startswith("I;16") or arr.max() > 255:
            arr >>= 8
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def open_image(path: str | os.PathLike) -> Image.Image:
    """`Image.open` under the labeler's pixel limit (PIL checks it when it opens a file): for every image
    the labeler opens, targets and the outputs made at their size."""
    with _limit_lock:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None if previous is None else max(previous, MAX_PIXELS)
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image as an upright (EXIF-transposed) (H, W, 3) uint8 RGB array."""
    return np.asarray(_to_rgb(ImageOps.exif_transpose(img))).copy()


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode `path` to an upright (H, W, 3) uint8 RGB array, or raise ImageReadError."""
    try:
        with open_image(path) as img:
            return pil_to_rgb(img)
    except _DECODE_ERRORS as e:
        raise ImageReadError(f"{path}: cannot read image ({e})") from e


def upright_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image as `read_rgb` returns it, read from the header only."""
    try:
        with open_image(path) as img:
            w, h = img.size
            orientation = img.getexif().get(ImageOps.ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS as e:
        raise ImageReadError(f"{path}: cannot read image ({e})") from e
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in `folder`, sorted by name: no sub-folders (so an output folder inside
    the target folder is never labeled), no hidden files."""
    return [
        p for p in sorted(Path(folder).iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
