"""Per-target output files (id masks, colour mask, label map, overlay, boxes) and results.csv.

Usage:
    writer = TargetWriter(Path("out"), {1: "scratch"})
    writer.write("img_001", rgb, detections)          # out/id_masks, masks, labels, overlays, bboxes
    table = ResultsTable({1: "scratch"})
    table.add_target("img_001.jpg", detections)
    table.add_failure("broken.jpg", "cannot decode")
    table.write(Path("out/results.csv"))
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import cv2
import numpy as np

from labeler.colors import color_for
from labeler.detections import Detection
from labeler.files import atomic_write_bytes, atomic_write_text
from labeler.prompts import class_name

SUBFOLDERS = ("id_masks", "masks", "labels", "overlays", "bboxes")
JPEG_QUALITY = 90
OVERLAY_ALPHA = 0.5


def id_mask_path(output_dir: str | os.PathLike, stem: str, obj_id: int) -> Path:
    """Where object `obj_id`'s mask on the target written as `stem` goes: id_masks/<stem>_id<k>.png."""
    return Path(output_dir) / "id_masks" / f"{stem}_id{obj_id}.png"


def paint_order(detections: list[Detection]) -> list[Detection]:
    """Present detections in painting order: ascending logit, ties by ascending ID (last painted wins)."""
    return sorted((d for d in detections if d.present), key=lambda d: (d.logit, d.id))


def label_map(shape: tuple[int, int], detections: list[Detection]) -> np.ndarray:
    """(H, W) uint8 map, pixel = object ID, 0 background; where masks overlap the higher logit wins.

    Usage: `labels = label_map(image.shape[:2], detections)`.
    """
    labels = np.zeros(shape, dtype=np.uint8)
    for d in paint_order(detections):
        labels[_mask(d, shape)] = d.id
    return labels


def color_mask(labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB image, each pixel the colour of its label (`color_for`), black background."""
    lut = np.array([color_for(i) for i in range(256)], dtype=np.uint8)
    return lut[labels]


def draw_overlay(image: np.ndarray, detections: list[Detection], classes: dict[int, str]) -> np.ndarray:
    """The image with translucent masks, boxes and "ID k [class] 0.93" labels; returns a new RGB array.

    Usage: `preview = draw_overlay(rgb, detections, {3: "scratch"})`.
    """
    _check_image(image)
    h, w = image.shape[:2]
    labels = label_map((h, w), detections)
    # Blended in uint8: float64 copies of the masked pixels took 85 MiB (16 MiB now) on a half-covered
    # 1800x1200 photo, in the writer thread, on top of the model's own peak.
    tinted = cv2.addWeighted(image, 1 - OVERLAY_ALPHA, color_mask(labels), OVERLAY_ALPHA, 0)
    out = np.where((labels > 0)[..., None], tinted, image)

    size = max(h, w)
    box_thickness = max(1, round(size / 400))
    font = cv2.FONT_HERSHEY_SIMPLEX
    font_scale = max(0.4, size / 1200)
    text_thickness = max(1, round(size / 600))
    pad = max(2, round(size / 300))
    for d in paint_order(detections):
        bbox = d.bbox
        if bbox is None:
            continue
        x0, y0, x1, y1 = bbox
        color = color_for(d.id)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, box_thickness)

        name = f" {classes[d.id]}" if classes.get(d.id) else ""
        text = f"ID {d.id}{name} {d.score:.2f}".encode("ascii", "replace").decode("ascii")
        scale = font_scale
        (tw, th), baseline = cv2.getTextSize(text, font, scale, text_thickness)
        if tw + 2 * pad > w:  # a long label on a narrow image: shrink it to fit
            scale = max(0.1, scale * (w - 2 * pad) / (tw + 2 * pad))
            (tw, th), baseline = cv2.getTextSize(text, font, scale, text_thickness)
        box_w, box_h = tw + 2 * pad, th + baseline + 2 * pad
        # Above the box when it fits, else just inside its top; always inside the image.
        tx = min(max(x0, 0), max(w - box_w, 0))
        ty = y0 - box_h if y0 - box_h >= 0 else y0
        ty = min(max(ty, 0), max(h - box_h, 0))
        cv2.rectangle(out, (tx, ty), (tx + box_w - 1, ty + box_h - 1), color, cv2.FILLED)
        ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        cv2.putText(out, text, (tx + pad, ty + pad + th), font, scale, ink, text_thickness, cv2.LINE_AA)
    return out


class TargetWriter:
    """Writes one target's files under output_dir.

    Usage: `TargetWriter(out_dir, {1: "scratch"}).write("img_001", rgb, detections)`.
    """

    def __init__(self, output_dir: Path, classes: dict[int, str]):
        self.output_dir = Path(output_dir)
        self.classes = classes
        for name in SUBFOLDERS:
            (self.output_dir / name).mkdir(parents=True, exist_ok=True)

    def write(self, stem: str, image: np.ndarray, detections: list[Detection]) -> None:
        """Write id_masks/<stem>_id<k>.png, masks/<stem>.png, labels/<stem>.png, overlays/<stem>.jpg, bboxes/<stem>.txt."""
        _check_image(image)
        shape = image.shape[:2]
        out = self.output_dir
        for d in detections:
            path = id_mask_path(out, stem, d.id)
            if d.present:
                atomic_write_bytes(path, _encode(".png", _mask(d, shape).astype(np.uint8) * 255))
            else:
                path.unlink(missing_ok=True)  # a stale mask from an earlier run
        labels = label_map(shape, detections)
        atomic_write_bytes(out / "masks" / f"{stem}.png", _encode(".png", _bgr(color_mask(labels))))
        atomic_write_bytes(out / "labels" / f"{stem}.png", _encode(".png", labels))
        overlay = draw_overlay(image, detections, self.classes)
        atomic_write_bytes(
            out / "overlays" / f"{stem}.jpg",
            _encode(".jpg", _bgr(overlay), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]),
        )
        lines = [
            f"{d.id} " + " ".join(str(v) for v in d.bbox)
            for d in sorted(detections, key=lambda d: d.id)
            if d.bbox is not None
        ]
        atomic_write_text(out / "bboxes" / f"{stem}.txt", "".join(line + "\n" for line in lines))


class ResultsTable:
    """Rows of results.csv, written atomically in one go.

    Usage: `t = ResultsTable(classes); t.add_target("a.jpg", dets); t.add_failure("b.jpg", "why"); t.write(p)`.
    """

    COLUMNS = ["image", "id", "class", "score", "logit", "area", "bbox", "status", "error"]

    def __init__(self, classes: dict[int, str]):
        self.classes = classes
        self.rows: list[dict[str, str]] = []
        self.targets = 0  # targets labeled, failures excluded

    def add_target(self, image_name: str, detections: list[Detection]) -> None:
        """One row per detection (present or absent), in ID order."""
        self.targets += 1
        for d in sorted(detections, key=lambda d: d.id):
            bbox = d.bbox
            self.rows.append({
                "image": image_name,
                "id": str(d.id),
                "class": class_name(self.classes, d.id),
                "score": f"{d.score:.4f}",
                "logit": f"{d.logit:.4f}",
                "area": str(d.area),
                "bbox": " ".join(str(v) for v in bbox) if bbox is not None else "",
                "status": "present" if d.present else "absent",
                "error": "",
            })

    def add_failure(self, image_name: str, reason: str) -> None:
        """One `failed` row for a target that could not be read or labeled."""
        row = dict.fromkeys(self.COLUMNS, "")
        row.update(image=image_name, status="failed", error=" ".join(str(reason).split()))
        self.rows.append(row)

    @property
    def failures(self) -> int:
        """Number of failed targets."""
        return sum(r["status"] == "failed" for r in self.rows)

    def present_counts(self) -> dict[int, int]:
        """Object ID -> number of targets it is present on (IDs seen only as absent map to 0)."""
        counts: dict[int, int] = {}
        for r in self.rows:
            if r["id"]:
                obj_id = int(r["id"])
                counts[obj_id] = counts.get(obj_id, 0) + (r["status"] == "present")
        return dict(sorted(counts.items()))

    def write(self, path: Path) -> None:
        """Write all rows to `path` (header first), atomically."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(path, buf.getvalue())


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")


def _mask(d: Detection, shape: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(d.mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"object {d.id}: mask shape {mask.shape} != image size {tuple(shape)}")
    return mask


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _encode(ext: str, array: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, array, params or [])
    if not ok:
        raise OSError(f"could not encode {ext} image")
    return buf.tobytes()
