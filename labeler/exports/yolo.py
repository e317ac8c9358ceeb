"""YOLO segmentation, as Ultralytics reads it: `yolo/` with `images/`, `labels/`, `train.txt`, `val.txt`, `data.yaml`.

`labels/<stem>.txt`: one line per present object, `<class> x1 y1 x2 y2 ...`; the class index is the
position of the object ID in the sorted list of all object IDs (data.yaml maps index -> class name).

One object is one line, whatever its parts: Ultralytics counts every line as an instance. The parts
(OpenCV's external contours) are joined into one polygon the way Ultralytics' own COCO converter
joins them: each part is connected to the polygon so far at their closest points, by a zero-width
bridge walked there and back. A YOLO polygon can't have holes, so holes are filled.

Ultralytics draws a line by scaling it to the image's pixels, truncating to integers and filling
the polygon (`polygon2mask`: `astype(np.int32)`, `cv2.fillPoly`). Contour points are boundary
pixels, so each point is written at its pixel's centre, (x + 0.5) / width with 6 decimals: the
truncation gives the pixel back, and the drawn line is the mask with holes filled, plus the
one-pixel bridges between parts.

`images/<stem><ext>` links to each labeled target (a copy where no link can be made), so
`labels/` and `images/` pair by name; `train.txt` and `val.txt` list them, split by a fixed seed
(`val_fraction` of the images, at least one; a single image serves both).

Usage: `write_yolo(folder, folder.labeled(targets), {1: "disc"}, [1, 2], val_fraction=0.1)`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np

from ..outputs.folder import OutputFolder, TargetRecord
from ..types.guides import class_name
from ..utils.files import atomic_write_text
from .common import read_id_mask

DECIMALS = 6
SPLIT_SEED = 0


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """(N, 2) int arrays of (x, y) boundary-pixel coordinates, one per separate part of `mask`."""
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2) for c in contours]


def object_polygon(mask: np.ndarray) -> np.ndarray | None:
    """One (N, 2) polygon of all the mask's parts, largest first, each joined at its closest points;
    None for a mask of fewer than 3 boundary points (a pixel or two)."""
    parts = sorted(mask_polygons(mask), key=len, reverse=True)
    if not parts:
        return None
    polygon = parts[0]
    for part in parts[1:]:
        distances = ((polygon[:, None, :] - part[None, :, :]) ** 2).sum(axis=-1)
        i, j = np.unravel_index(distances.argmin(), distances.shape)
        # Walk to the part at its closest point, around it, back to where it was joined.
        polygon = np.concatenate([polygon[: i + 1], np.roll(part, -j, axis=0), part[j : j + 1], polygon[i:]])
    return polygon if len(polygon) >= 3 else None


def polygon_lines(mask: np.ndarray, class_index: int) -> list[str]:
    """The YOLO segmentation line of one object (none for a speck): `class x1 y1 ...`, pixel centres
    normalized by the mask's width and height."""
    polygon = object_polygon(mask)
    if polygon is None:
        return []
    h, w = mask.shape
    coords = ((polygon + 0.5) / np.array([w, h], dtype=np.float64)).ravel()
    return [f"{class_index} " + " ".join(f"{v:.{DECIMALS}f}" for v in coords)]


def split(names: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val) with a fixed seed; val holds round(fraction * n) names, at least one, and a single name serves both."""
    if len(names) < 2:
        return names, names
    order = np.random.default_rng(SPLIT_SEED).permutation(len(names))
    count = min(len(names) - 1, max(1, round(val_fraction * len(names))))
    val = {names[k] for k in order[:count]}
    return [n for n in names if n not in val], [n for n in names if n in val]


def data_yaml(root: Path, classes: dict[int, str], object_ids: list[int], image_dir: Path | None) -> str:
    """data.yaml: `path`, `train`, `val`, `nc` and `names` (index -> class name)."""
    where = str(Path(image_dir).resolve()) if image_dir is not None else "the target folder"
    lines = [
        "# YOLO segmentation dataset written by the few-shot SAM 2 labeler; train with:",
        f"#   yolo segment train data={json.dumps(str(root.absolute() / 'data.yaml'))} model=yolo11n-seg.pt",
        f"# Images: {' '.join(where.splitlines())}",
        "# images/<stem>.<ext> links to each labeled target there, labels/<stem>.txt holds its objects.",
        "# Class index = position of the object ID in the sorted list of IDs: "
        + ", ".join(f"{i} = ID {k}" for i, k in enumerate(object_ids)),
        f"path: {json.dumps(str(root.absolute()))}",
        "train: train.txt",
        "val: val.txt",
        f"nc: {len(object_ids)}",
        "names:",
    ]
    # JSON strings are valid YAML double-quoted scalars, so any name or path is quoted safely.
    lines += [f"  {i}: {json.dumps(class_name(classes, k))}" for i, k in enumerate(object_ids)]
    return "\n".join(lines) + "\n"


def _link(target: Path, link: Path) -> None:
    """`link` -> `target` (absolute), replacing what is there; a copy where the file system has no links."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}.tmp")  # a new name, then an atomic rename
    try:
        os.symlink(Path(target).absolute(), tmp)
    except OSError:
        shutil.copyfile(target, tmp)
    os.replace(tmp, link)


def write_yolo(folder: OutputFolder, items: list[TargetRecord], classes: dict[int, str], object_ids: list[int],
               image_dir: Path | None = None, val_fraction: float = 0.1) -> Path:
    """Write yolo/ for every labeled target: images/, labels/ (empty files where nothing is present),
    train.txt, val.txt and data.yaml."""
    root = folder.yolo
    index = {k: i for i, k in enumerate(object_ids)}
    images = []
    for item in items:
        lines = []
        for obj_id, _score in item.present:
            mask = read_id_mask(folder, item, obj_id)
            if mask is not None and obj_id in index:
                lines += polygon_lines(mask, index[obj_id])
        atomic_write_text(root / "labels" / f"{item.stem}.txt", "".join(line + "\n" for line in lines))
        image = f"{item.stem}{item.path.suffix}"
        _link(item.path, root / "images" / image)
        images.append(f"./images/{image}")  # Ultralytics reads ./ as relative to the list's folder
    train, val = split(images, val_fraction)
    atomic_write_text(root / "train.txt", "".join(f"{name}\n" for name in train))
    atomic_write_text(root / "val.txt", "".join(f"{name}\n" for name in val))
    atomic_write_text(root / "data.yaml", data_yaml(root, classes, object_ids, image_dir))
    return root


def write(export) -> Path:
    """The format's entry (`exports.FORMATS`): yolo/."""
    return write_yolo(export.folder, export.items, export.classes, export.object_ids, export.image_dir,
                      export.yolo_val)
