"""COCO run-length encoding (compressed RLE strings) of binary masks, via pycocotools.

Usage: `rle = encode(mask)` -> {"size": [H, W], "counts": "..."}; `mask = decode(rle)`.
"""

from __future__ import annotations

import warnings

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["decode", "encode"]


def encode(mask: np.ndarray) -> dict:
    """The JSON-ready compressed COCO RLE of an (H, W) mask (nonzero = set): {"size": [H, W], "counts": str}."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(bool).astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """The (H, W) bool, C-contiguous mask of {"size": [H, W], "counts": str}.

    Raises ValueError naming the problem when the size or counts string is malformed. Only the
    canonical string pycocotools writes for some (H, W) mask is accepted: pycocotools itself
    does not check its input (a string ending inside a number makes it read past the string's end
    and corrupt memory; one whose runs fall short of H*W leaves pixels uninitialised).
    """
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in size)):
        raise ValueError(f"size must be [height, width], got {size!r}")
    if not isinstance(counts, str):
        raise ValueError(f"counts must be a string, got {type(counts).__name__}")
    if any(not "0" <= c <= "o" for c in counts):  # each character holds 6 bits, as chr(48 + bits)
        raise ValueError("counts has a character outside the RLE alphabet '0'..'o'")
    if counts and (ord(counts[-1]) - 48) & 0x20:  # bit 0x20: the number goes on in the next character
        raise ValueError("counts ends inside a number")
    try:
        with warnings.catch_warnings():  # pycocotools' __array__ predates numpy 2's `copy` keyword
            warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
            mask = mask_utils.decode({"size": list(size), "counts": counts.encode("ascii")})
    except ValueError:  # runs that overrun H*W (negative runs wrap around to huge ones)
        raise ValueError(f"counts runs overrun the {size[0]}x{size[1]} mask") from None
    mask = np.ascontiguousarray(mask, dtype=bool)
    if encode(mask)["counts"] != counts:  # runs short of H*W, or not the canonical form
        raise ValueError(f"counts is not a valid RLE of a {size[0]}x{size[1]} mask")
    return mask
