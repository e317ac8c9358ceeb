"""YOLO segmentation: `yolo/labels/<stem>.txt` with normalized polygons, and `yolo/data.yaml`.

One line per part of each present object: `<class> x1 y1 x2 y2 ...`, coordinates divided by the
image width/height, 6 decimals. The class index is the position of the object ID in the sorted
list of all object IDs; data.yaml maps index -> class name. An object in several separate parts
gives one line per part (YOLO has one polygon per line); parts of fewer than 3 contour points
(a pixel, a 2-pixel sliver) are skipped.

Polygons are OpenCV's external contours (`cv2.findContours`, RETR_EXTERNAL, CHAIN_APPROX_SIMPLE):
contour points are the boundary pixels' coordinates, so `cv2.fillPoly` of a polygon gives back the
part's pixels exactly - with its holes filled: a YOLO polygon can't have holes.

Usage: `write_yolo(folder, folder.labeled(targets), {1: "disc"}, [1, 2], Path("targets"))`.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..files import atomic_write_text
from ..guides import class_name
from ..output_folder import OutputFolder, TargetRecord
from .common import read_id_mask

DECIMALS = 6


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """(N, 2) int arrays of (x, y) pixel coordinates, one per separate part of `mask`, each of >= 3 points."""
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2) for c in contours if len(c) >= 3]


def polygon_lines(mask: np.ndarray, class_index: int) -> list[str]:
    """YOLO segmentation lines of one object: `class x1 y1 ...` normalized by the mask's width and height."""
    h, w = mask.shape
    lines = []
    for poly in mask_polygons(mask):
        coords = (poly / np.array([w, h], dtype=np.float64)).ravel()
        lines.append(f"{class_index} " + " ".join(f"{v:.{DECIMALS}f}" for v in coords))
    return lines


def data_yaml(classes: dict[int, str], object_ids: list[int], image_dir: Path | None) -> str:
    """data.yaml: `nc` and `names` (index -> class name), and a comment saying where the images are."""
    where = str(Path(image_dir).resolve()) if image_dir is not None else "the target folder"
    where = " ".join(where.splitlines())
    lines = [
        "# YOLO segmentation labels written by the few-shot SAM 2 labeler.",
        f"# Images: {where}",
        "# labels/<stem>.txt belongs to the image <stem>.<ext> there (a name shared by two images,",
        "# a.jpg and a.png, is written as a_jpg.txt and a_png.txt). To train, put the images in an",
        "# images/ folder beside labels/ and add `path:`, `train:` and `val:` here.",
        "# Class index = position of the object ID in the sorted list of IDs: "
        + ", ".join(f"{i} = ID {k}" for i, k in enumerate(object_ids)),
        f"nc: {len(object_ids)}",
        "names:",
    ]
    # JSON strings are valid YAML double-quoted scalars, so any class name is quoted safely.
    lines += [f"  {i}: {json.dumps(class_name(classes, k))}" for i, k in enumerate(object_ids)]
    return "\n".join(lines) + "\n"


def write_yolo(folder: OutputFolder, items: list[TargetRecord], classes: dict[int, str], object_ids: list[int],
               image_dir: Path | None = None) -> Path:
    """Write yolo/labels/<stem>.txt for every labeled target (empty when nothing is present) and yolo/data.yaml."""
    root = folder.yolo
    index = {k: i for i, k in enumerate(object_ids)}
    for item in items:
        lines = []
        for obj_id, _score in item.present:
            mask = read_id_mask(folder, item, obj_id)
            if mask is not None and obj_id in index:
                lines += polygon_lines(mask, index[obj_id])
        atomic_write_text(root / "labels" / f"{item.stem}.txt", "".join(line + "\n" for line in lines))
    atomic_write_text(root / "data.yaml", data_yaml(classes, object_ids, image_dir))
    return root
