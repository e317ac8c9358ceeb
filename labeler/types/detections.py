"""What the labeler found on one target: one `Detection` per tracked object ID."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Detection:
    """One object's result on one target image.

    Attributes:
        id: object ID, 1–255.
        logit: SAM 2's object-score logit; the object counts as present when it exceeds the threshold.
        mask: (H, W) bool mask at the target's original size (upright orientation).
        present: logit above the threshold and a non-empty mask.
        class_name: the class name of `id` (the prompts' `classes`, else `object_<id>`).
    Usage: `Detection(1, 2.3, mask, present=True).bbox` -> (xmin, ymin, xmax, ymax), max exclusive.
    """

    id: int
    logit: float
    mask: np.ndarray
    present: bool
    class_name: str = ""

    @property
    def score(self) -> float:
        """The object-score logit as a probability, sigmoid(logit)."""
        return 1.0 / (1.0 + math.exp(-self.logit)) if self.logit > -700 else 0.0

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask)) if self.present else 0

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """(xmin, ymin, xmax, ymax) in integer pixels with max exclusive; None when absent."""
        if not self.present:
            return None
        ys = np.flatnonzero(self.mask.any(axis=1))
        xs = np.flatnonzero(self.mask.any(axis=0))
        if len(xs) == 0:
            return None
        return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1
