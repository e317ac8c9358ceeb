"""The guides drawn on one reference image: box, points and brush masks per object ID.

Usage: `ref = ReferenceGuides.from_image("refs/a.jpg", [ObjectGuides(id=1, box=[4, 5, 30, 40])])`.
Coordinates are pixels of the EXIF-upright image, x then y; masks are (H, W) bool of that image.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labeler.utils.images import upright_size

__all__ = ["ObjectGuides", "ReferenceGuides", "class_name"]


def class_name(classes: dict[int, str], obj_id: int) -> str:
    """Class name of `obj_id`, or `object_<id>` when `classes` has none.

    Usage: `class_name({1: "scratch"}, 2)` -> "object_2".
    """
    return classes.get(obj_id) or f"object_{obj_id}"


def _same_mask(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


@dataclass(eq=False)
class ObjectGuides:
    """The guides drawn for one object ID on one reference image.

    Attributes:
        id: object ID, 1–255.
        box: (x0, y0, x1, y1) in upright image pixels, or None.
        points: [(x, y), ...] click points in upright image pixels.
        labels: one label per point, 1 = positive, 0 = negative.
        paint: (H, W) bool brush paint, or None.
        erase: (H, W) bool brush erase, or None.
        absent: the object is not on this image: SAM 2 is given an empty mask for it (a taught false
            positive); no other guide goes with it.
    Lists are accepted and normalised (box to a tuple, points to tuples, masks to bool arrays; a bool
    array is kept as is, not copied).
    Usage: `ObjectGuides(id=2, points=[[10, 12]], labels=[1], paint=mask_hw).has_prompt` -> True.
    Equality compares masks by value (`np.array_equal`).
    """

    id: int
    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    paint: np.ndarray | None = None
    erase: np.ndarray | None = None
    absent: bool = False

    def __post_init__(self) -> None:
        if self.box is not None:
            self.box = tuple(self.box)
        self.points = [tuple(p) for p in self.points]
        self.labels = list(self.labels)
        self.paint = None if self.paint is None else np.asarray(self.paint, dtype=bool)
        self.erase = None if self.erase is None else np.asarray(self.erase, dtype=bool)

    @property
    def has_prompt(self) -> bool:
        """A box or at least one point: what SAM 2 takes as a box/point prompt."""
        return self.box is not None or len(self.points) > 0

    @property
    def has_guide(self) -> bool:
        """A prompt, paint with at least one pixel set (erase alone guides nothing), or `absent`."""
        return self.absent or self.has_prompt or (self.paint is not None and bool(np.any(self.paint)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObjectGuides):
            return NotImplemented
        return (
            (self.id, self.box, self.points, self.labels, self.absent)
            == (other.id, other.box, other.points, other.labels, other.absent)
            and _same_mask(self.paint, other.paint)
            and _same_mask(self.erase, other.erase)
        )


@dataclass
class ReferenceGuides:
    """One reference image and the objects guided on it.

    Attributes:
        image: path of the image (made absolute).
        width, height: upright (EXIF-applied) size of the image in pixels.
        objects: the guided objects, at most one per ID.
    Usage: `ReferenceGuides("refs/a.jpg", 960, 540, [ObjectGuides(1, box=(0, 0, 9, 9))]).object(1)`.
    """

    image: Path
    width: int
    height: int
    objects: list[ObjectGuides] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.image = Path(os.path.abspath(self.image))

    @classmethod
    def from_image(cls, image: str | os.PathLike, objects: Iterable[ObjectGuides] = ()) -> ReferenceGuides:
        """The reference for `image`, its upright width and height read from the file's header.

        Raises `labeler.utils.images.ImageReadError` when the file can't be read.
        Usage: `ReferenceGuides.from_image("refs/a.jpg", [ObjectGuides(id=1, box=[0, 0, 9, 9])])`.
        """
        width, height = upright_size(image)
        return cls(image, width, height, list(objects))

    def object(self, obj_id: int) -> ObjectGuides | None:
        """The guides for `obj_id` on this reference, or None."""
        return next((o for o in self.objects if o.id == obj_id), None)


def compose_mask(sam_mask: np.ndarray, obj: ObjectGuides) -> np.ndarray:
    """SAM 2's mask from the box/points (all False without them), plus painted, minus erased pixels."""
    mask = sam_mask.copy()
    if obj.paint is not None:
        mask |= obj.paint
    if obj.erase is not None:
        mask &= ~obj.erase
    return mask
