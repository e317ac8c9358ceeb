"""Dataset exports (COCO, YOLO), built after a batch from what the output folder holds.

Nothing is kept in memory during the batch: the manifest says which targets are labeled and gives
their results.csv rows (object IDs, scores), and each object's mask is read back from
`id_masks/<stem>_id<k>.png`, one at a time. So a resumed run exports every target labeled so far
with the current settings, not only those labeled by this run.

Usage:
    write_exports(Path("output"), targets, output_stems(targets), {1: "disc"}, ["coco", "yolo"], object_ids=[1, 2])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..manifest import Manifest

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
FORMATS = ("coco", "yolo")


def parse_formats(value: str | Iterable[str] | None) -> list[str]:
    """`"coco,yolo"` (or a list of names, as config.py's FORMATS) -> ["coco", "yolo"]; ValueError for unknown names.

    Usage: `parse_formats("yolo, coco")` -> ["yolo", "coco"]; `parse_formats("")` -> [].
    """
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for name in names:
        name = str(name).strip().lower()
        if not name:
            continue
        if name not in FORMATS:
            raise ValueError(f"unknown export format {name!r} (--formats takes a comma list of {', '.join(FORMATS)})")
        if name not in out:
            out.append(name)
    return out


@dataclass
class LabeledTarget:
    """A target the manifest records as labeled: its file, output stem and results.csv rows."""

    path: Path
    stem: str
    rows: list[dict]

    @property
    def present(self) -> list[tuple[int, float]]:
        """(object ID, score) of each present object, in ID order."""
        return sorted((int(r["id"]), float(r["score"])) for r in self.rows if r["status"] == "present")


def labeled_targets(output_dir: str | os.PathLike, targets: list[Path], stems: list[str]) -> list[LabeledTarget]:
    """The targets (in their order) that manifest.json records as labeled under the given stems.

    Failed targets and targets not labeled yet (an interrupted run) are left out.
    """
    manifest = Manifest.load(Path(output_dir) / "manifest.json")
    stem_of = dict(zip(targets, stems))
    return [
        LabeledTarget(Path(target), entry["stem"], entry["rows"])
        for target, entry in manifest.labeled(targets) if entry["stem"] == stem_of[target]
    ]


def all_object_ids(items: list[LabeledTarget], object_ids: Iterable[int] | None = None) -> list[int]:
    """The prompts' object IDs (`object_ids`) and every ID in the items' rows, sorted."""
    return sorted(set(object_ids or ()) | {int(r["id"]) for item in items for r in item.rows if r["id"]})


def read_id_mask(output_dir: str | os.PathLike, stem: str, obj_id: int) -> np.ndarray | None:
    """(H, W) bool mask of `id_masks/<stem>_id<k>.png`, or None (with a warning) when it can't be read."""
    import cv2  # here, not at the top: the command line imports this module before any work

    from ..writers import id_mask_path

    path = id_mask_path(output_dir, stem, obj_id)
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
    if mask is None:
        log.warning("export: %s is missing or unreadable; object %d of %s is left out", path, obj_id, stem)
        return None
    return mask > 127


def write_exports(
    output_dir: str | os.PathLike,
    targets: list[Path],
    stems: list[str],
    classes: dict[int, str],
    formats: str | Iterable[str] | None,
    object_ids: Iterable[int] | None = None,
) -> list[Path]:
    """Write each requested format for every labeled target; returns the paths written.

    `object_ids`: all object IDs of the prompts (categories, and YOLO class index = position in the
    sorted list); by default the IDs found in the manifest rows.
    """
    formats = parse_formats(formats)
    if not formats:
        return []
    output_dir = Path(output_dir)
    items = labeled_targets(output_dir, targets, stems)
    ids = all_object_ids(items, object_ids)
    written = []
    for name in formats:
        if name == "coco":
            from .coco import write_coco

            written.append(write_coco(output_dir, items, classes, ids))
        elif name == "yolo":
            from .yolo import write_yolo

            image_dir = targets[0].parent if targets else None
            written.append(write_yolo(output_dir, items, classes, ids, image_dir))
    return written


def formats_arg(text: str) -> list[str]:
    """argparse `type` of --formats: `parse_formats`, its error shown as the option's error."""
    import argparse

    try:
        return parse_formats(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
