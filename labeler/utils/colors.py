"""A fixed colour per object ID, shared by the colour masks, the overlays and the selector."""

from __future__ import annotations

import colorsys

# Hand-picked, well separated colours for the first IDs; golden-ratio hues after that.
_FIRST = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190),
]


def color_for(obj_id: int) -> tuple[int, int, int]:
    """RGB colour (0–255) of object `obj_id` (1–255); ID 0 (background) is black."""
    if obj_id <= 0:
        return (0, 0, 0)
    if obj_id <= len(_FIRST):
        return _FIRST[obj_id - 1]
    hue = (obj_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def palette() -> list[tuple[int, int, int]]:
    """Colours of IDs 0–255, index = ID."""
    return [color_for(i) for i in range(256)]
