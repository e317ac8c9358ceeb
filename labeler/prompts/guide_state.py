"""The guides being drawn on one reference image: the state behind the interactive SmartSelector.

Plain Python (no GUI): the selector's event handlers translate mouse and key events into calls on a
`GuideState`, which keeps one `ObjectGuides` per object ID, an undo/redo history, the current ID and
the brush. Coordinates are image pixels, x then y; a pixel's centre has integer coordinates (as in
matplotlib's `imshow` and OpenCV), and brush positions are rounded to the nearest pixel.

Masks are only ever written during a brush stroke, on private copies made when the stroke begins,
so undo steps and unchanged objects share mask arrays safely instead of copying them.

Usage:
    state = GuideState(960, 540)
    state.set_box(10, 20, 200, 180); state.add_point(50, 60, 1)
    state.select(2); state.begin_stroke(100, 100); state.extend_stroke(120, 110); state.end_stroke()
    state.undo(); guides = state.guides()   # list[ObjectGuides] of the objects with a guide
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

from labeler.prompts.prompt_set import ObjectGuides

__all__ = ["MAX_BRUSH_RADIUS", "MAX_ID", "MIN_BRUSH_RADIUS", "UNDO_DEPTH", "GuideState"]

MAX_ID = 255
MIN_BRUSH_RADIUS, MAX_BRUSH_RADIUS = 1, 200
UNDO_DEPTH = 100
MIN_BOX_SIZE = 2  # pixels; a thinner box (a click rather than a drag) is ignored

Rect = tuple[int, int, int, int]


def _snapshot(obj: ObjectGuides | None) -> ObjectGuides | None:
    """A copy of `obj` that shares its masks (they are never written outside a stroke's private copies)."""
    if obj is None:
        return None
    return ObjectGuides(obj.id, obj.box, obj.points, obj.labels, obj.paint, obj.erase)


def _prompt(obj: ObjectGuides | None) -> tuple:
    """What SAM 2's box/point prompt is made of."""
    return (None, [], []) if obj is None else (obj.box, obj.points, obj.labels)


def _is_empty(obj: ObjectGuides) -> bool:
    return obj.box is None and not obj.points and obj.paint is None and obj.erase is None


def _check_id(obj_id: int) -> int:
    if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or not 1 <= obj_id <= MAX_ID:
        raise ValueError(f"object ID must be an integer 1–{MAX_ID}, got {obj_id!r}")
    return int(obj_id)


def _box_outline_distance(box: tuple, x: float, y: float) -> float:
    x0, y0, x1, y1 = box
    dx, dy = max(x0 - x, 0.0, x - x1), max(y0 - y, 0.0, y - y1)
    if dx > 0 or dy > 0:
        return math.hypot(dx, dy)
    return min(x - x0, x1 - x, y - y0, y1 - y)


@dataclass
class _Stroke:
    obj: ObjectGuides  # the live object being drawn on (holds private mask copies)
    prev: ObjectGuides | None  # its guides before the stroke: the undo step
    erase: bool
    last: tuple[int, int]
    changed: bool = False


class GuideState:
    """Guides on one reference image being edited: per-object guides, undo/redo, current ID, brush.

    Attributes:
        width, height: image size in pixels.
        current_id: the object being edited, 1–255 (assigning it is `select`).
        brush_radius: brush radius in pixels, clamped to [1, 200] on assignment.
        taken: IDs used on other references, skipped by `next_unused_id`.
    Every change (box, point, deletion, clear, a whole brush stroke) is one undo step; a new change
    clears the redo history. The ObjectGuides given to the constructor are copied.
    Usage: `state = GuideState(960, 540); state.set_box(10, 20, 200, 180); state.guides()`.
    """

    def __init__(
        self,
        width: int,
        height: int,
        objects: Iterable[ObjectGuides] = (),
        current_id: int = 1,
        brush_radius: int = 12,
        taken: Iterable[int] = (),
    ) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"image size must be at least 1x1, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self._objects: dict[int, ObjectGuides] = {}
        for obj in objects:
            obj_id = _check_id(obj.id)
            if obj_id in self._objects:
                raise ValueError(f"object ID {obj_id} is given twice")
            masks = [self._own_mask(m, obj_id) for m in (obj.paint, obj.erase)]
            copy = ObjectGuides(obj_id, obj.box, obj.points, obj.labels, *masks)
            if not _is_empty(copy):
                self._objects[obj_id] = copy
        self.taken: set[int] = set(taken)
        self._undo: deque[tuple[int, ObjectGuides | None]] = deque(maxlen=UNDO_DEPTH)
        self._redo: list[tuple[int, ObjectGuides | None]] = []
        self._tick = 0
        self._revision: dict[int, int] = {}
        self._prompt_revision: dict[int, int] = {}
        self._stroke: _Stroke | None = None
        self._current = _check_id(current_id)
        self.brush_radius = brush_radius

    def _own_mask(self, mask: np.ndarray | None, obj_id: int) -> np.ndarray | None:
        """A private bool copy of a given mask, None when it has no pixel set."""
        if mask is None:
            return None
        mask = np.array(mask, dtype=bool)
        if mask.shape != (self.height, self.width):
            raise ValueError(f"object {obj_id}: mask shape {mask.shape} is not {(self.height, self.width)}")
        return mask if mask.any() else None

    # ------------------------------------------------------------------------------------------
    # Reading

    @property
    def current_id(self) -> int:
        return self._current

    @current_id.setter
    def current_id(self, obj_id: int) -> None:
        self.select(obj_id)

    @property
    def brush_radius(self) -> int:
        return self._brush_radius

    @brush_radius.setter
    def brush_radius(self, radius: float) -> None:
        self._brush_radius = int(min(max(round(radius), MIN_BRUSH_RADIUS), MAX_BRUSH_RADIUS))

    def guides(self) -> list[ObjectGuides]:
        """Copies of the objects that have a guide (`ObjectGuides.has_guide`), sorted by ID."""
        copy = lambda m: None if m is None else m.copy()  # noqa: E731
        return [
            ObjectGuides(o.id, o.box, o.points, o.labels, copy(o.paint), copy(o.erase))
            for _, o in sorted(self._objects.items())
            if o.has_guide
        ]

    def object(self, obj_id: int | None = None) -> ObjectGuides | None:
        """The stored guides of `obj_id` (default: the current object), None if it has none.

        Not a copy: don't modify it. It follows edits; after undo/redo, fetch it again.
        """
        return self._objects.get(self._current if obj_id is None else obj_id)

    def ids(self) -> list[int]:
        """Sorted IDs with any guide data (a box, a point, painted or erased pixels)."""
        return sorted(self._objects)

    def revision(self, obj_id: int) -> int:
        """A number that increases whenever `obj_id`'s guides change (undo/redo included); 0 if never."""
        return self._revision.get(obj_id, 0)

    def prompt_revision(self, obj_id: int) -> int:
        """Like `revision`, but increases only when the box, points or labels change."""
        return self._prompt_revision.get(obj_id, 0)

    # ------------------------------------------------------------------------------------------
    # Selection

    def select(self, obj_id: int) -> None:
        """Make `obj_id` (1–255) the current object; ValueError outside that range."""
        obj_id = _check_id(obj_id)
        self._finish_stroke()
        self._current = obj_id

    def next_unused_id(self) -> int:
        """Select and return the smallest ID with no guides here and not in `taken`."""
        for obj_id in range(1, MAX_ID + 1):
            if obj_id not in self._objects and obj_id not in self.taken:
                self.select(obj_id)
                return obj_id
        raise ValueError(f"all object IDs 1–{MAX_ID} are in use")

    # ------------------------------------------------------------------------------------------
    # Box and points

    def set_box(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Replace the current object's box by the given corners (any order), clipped to the image.

        Returns False (and changes nothing) when the box is thinner than 2 px either way.
        """
        x0, x1 = sorted(min(max(float(v), 0.0), self.width) for v in (x0, x1))
        y0, y1 = sorted(min(max(float(v), 0.0), self.height) for v in (y0, y1))
        if x1 - x0 < MIN_BOX_SIZE or y1 - y0 < MIN_BOX_SIZE:
            return False
        obj, prev = self._begin_edit()
        obj.box = (x0, y0, x1, y1)
        self._end_edit(obj, prev)
        return True

    def add_point(self, x: float, y: float, label: int) -> None:
        """Add a point (label 1 positive, 0 negative) to the current object, clipped into the image."""
        if label not in (0, 1) or isinstance(label, bool):
            raise ValueError(f"point label must be 1 (positive) or 0 (negative), got {label!r}")
        obj, prev = self._begin_edit()
        obj.points.append((min(max(float(x), 0.0), self.width), min(max(float(y), 0.0), self.height)))
        obj.labels.append(int(label))
        self._end_edit(obj, prev)

    def delete_nearest(self, x: float, y: float, max_distance: float | None = None) -> bool:
        """Remove the current object's point or box (by its outline) nearest to (x, y).

        Brush strokes are not removed this way. Returns False when there is nothing to remove, or
        nothing within `max_distance`.
        """
        self._finish_stroke()
        obj = self._objects.get(self._current)
        if obj is None:
            return False
        candidates = [(math.hypot(px - x, py - y), k) for k, (px, py) in enumerate(obj.points)]
        if obj.box is not None:
            candidates.append((_box_outline_distance(obj.box, x, y), -1))
        if not candidates:
            return False
        distance, k = min(candidates)
        if max_distance is not None and distance > max_distance:
            return False
        obj, prev = self._begin_edit()
        if k < 0:
            obj.box = None
        else:
            del obj.points[k], obj.labels[k]
        self._end_edit(obj, prev)
        return True

    def clear(self) -> None:
        """Remove every guide of the current object, as one undo step."""
        self._finish_stroke()
        prev = self._objects.pop(self._current, None)
        if prev is not None:
            self._push(self._current, prev)
            self._bump(self._current, prompt=_prompt(prev) != _prompt(None))

    # ------------------------------------------------------------------------------------------
    # Brush

    def begin_stroke(self, x: float, y: float, erase: bool = False) -> Rect:
        """Start a paint (or erase) stroke of the current object with one brush stamp at (x, y).

        Returns the dirty rectangle (x0, y0, x1, y1), max exclusive, clipped to the image.
        """
        self._finish_stroke()
        obj = self._objects.get(self._current)
        prev = _snapshot(obj)
        live = obj if obj is not None else ObjectGuides(self._current)
        live.paint = None if live.paint is None else live.paint.copy()
        live.erase = None if live.erase is None else live.erase.copy()
        point = self._pixel(x, y)
        self._stroke = _Stroke(live, prev, bool(erase), point)
        return self._stamp(point, point)

    def extend_stroke(self, x: float, y: float) -> Rect:
        """Draw the brush from the stroke's last position to (x, y); returns the dirty rectangle.

        Without a stroke in progress (none begun, or ended by another edit such as `select` or
        `undo` in the middle of a drag) nothing is drawn and the rectangle is empty, (0, 0, 0, 0).
        """
        if self._stroke is None:
            return 0, 0, 0, 0
        point = self._pixel(x, y)
        rect = self._stamp(self._stroke.last, point)
        self._stroke.last = point
        return rect

    def end_stroke(self) -> None:
        """Finish the stroke: it becomes one undo step (none if it changed no pixel)."""
        self._finish_stroke()

    def _pixel(self, x: float, y: float) -> tuple[int, int]:
        """The nearest pixel, kept within a margin around the image so OpenCV's ints can't overflow."""
        margin = self.width + self.height + 2 * MAX_BRUSH_RADIUS
        return tuple(int(min(max(math.floor(v + 0.5), -margin), lim + margin))
                     for v, lim in ((x, self.width), (y, self.height)))

    def _stamp(self, a: tuple[int, int], b: tuple[int, int]) -> Rect:
        """Draw the brush along a..b on a small patch and merge it into the stroke's masks."""
        s, r = self._stroke, self._brush_radius
        x0, x1 = (min(max(v, 0), self.width) for v in (min(a[0], b[0]) - r, max(a[0], b[0]) + r + 1))
        y0, y1 = (min(max(v, 0), self.height) for v in (min(a[1], b[1]) - r, max(a[1], b[1]) + r + 1))
        if x0 == x1 or y0 == y1:
            return x0, y0, x1, y1
        patch = np.zeros((y1 - y0, x1 - x0), np.uint8)
        pa, pb = (a[0] - x0, a[1] - y0), (b[0] - x0, b[1] - y0)
        cv2.circle(patch, pa, r, 1, -1)
        if pa != pb:
            # thickness 2r, not 2r+1: OpenCV's thick line reaches r + 1/2 (2r+1 reaches r + 1)
            cv2.line(patch, pa, pb, 1, thickness=2 * r)
            cv2.circle(patch, pb, r, 1, -1)
        brush = patch.view(bool)
        on, off = ("erase", "paint") if s.erase else ("paint", "erase")
        if getattr(s.obj, on) is None:
            setattr(s.obj, on, np.zeros((self.height, self.width), bool))
        region = getattr(s.obj, on)[y0:y1, x0:x1]
        changed = not region[brush].all()
        region |= brush
        if getattr(s.obj, off) is not None:
            region = getattr(s.obj, off)[y0:y1, x0:x1]
            changed = changed or bool(region[brush].any())
            region &= ~brush
        if changed:
            if not s.changed:
                s.changed = True
                self._objects[s.obj.id] = s.obj
            self._bump(s.obj.id, prompt=False)
        return x0, y0, x1, y1

    def _finish_stroke(self) -> None:
        s, self._stroke = self._stroke, None
        if s is None or not s.changed:
            return  # an unchanged stroke leaves the stored object as it was (equal masks)
        for name in ("paint", "erase"):
            if getattr(s.obj, name) is not None and not getattr(s.obj, name).any():
                setattr(s.obj, name, None)
        if _is_empty(s.obj):
            del self._objects[s.obj.id]
        self._push(s.obj.id, s.prev)

    # ------------------------------------------------------------------------------------------
    # History

    def undo(self) -> bool:
        """Undo the last change (of any object); False when there is none."""
        return self._step(self._undo, self._redo)

    def redo(self) -> bool:
        """Redo the last undone change; False when there is none."""
        return self._step(self._redo, self._undo)

    def _step(self, source, target) -> bool:
        self._finish_stroke()
        if not source:
            return False
        obj_id, state = source.pop()
        old = self._objects.pop(obj_id, None)
        if state is not None:
            self._objects[obj_id] = state
        target.append((obj_id, old))
        self._bump(obj_id, prompt=_prompt(old) != _prompt(state))
        return True

    def _begin_edit(self) -> tuple[ObjectGuides, ObjectGuides | None]:
        """The current object to change in place (new if absent) and a snapshot of it for undo."""
        self._finish_stroke()
        obj = self._objects.get(self._current)
        return (obj if obj is not None else ObjectGuides(self._current)), _snapshot(obj)

    def _end_edit(self, obj: ObjectGuides, prev: ObjectGuides | None) -> None:
        if _is_empty(obj):
            self._objects.pop(obj.id, None)
        else:
            self._objects[obj.id] = obj
        self._push(obj.id, prev)
        self._bump(obj.id, prompt=_prompt(obj) != _prompt(prev))

    def _push(self, obj_id: int, prev: ObjectGuides | None) -> None:
        self._undo.append((obj_id, prev))
        self._redo.clear()

    def _bump(self, obj_id: int, prompt: bool) -> None:
        self._tick += 1
        self._revision[obj_id] = self._tick
        if prompt:
            self._prompt_revision[obj_id] = self._tick
