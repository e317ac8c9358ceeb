"""Per-target output files (id masks, colour mask, label map, overlay, boxes) and results.csv.

Usage:
    writer = TargetWriter(Path("out"), {1: "scratch"})
    writer.write("img_001", rgb, detections)          # out/id_masks, masks, labels, overlays, bboxes
    table = ResultsTable({1: "scratch"})
    table.add_target("img_001.jpg", detections)        # or table.add_record(TargetRecord(...))
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

from ..types.detections import Detection
from ..types.guides import class_name
from ..utils.colors import color_for
from ..utils.files import atomic_write_bytes, atomic_write_text
from .folder import TARGET_FOLDERS, Manifest, OutputFolder, TargetRecord

JPEG_QUALITY = 90
OVERLAY_ALPHA = 0.5


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
    return _lookup(labels, _RGB_LUT)


def draw_overlay(image: np.ndarray, detections: list[Detection], classes: dict[int, str]) -> np.ndarray:
    """The image with translucent masks, boxes and "ID k [class] 0.93" labels; returns a new RGB array.

    Usage: `preview = draw_overlay(rgb, detections, {3: "scratch"})`.
    """
    _check_image(image)
    labels = label_map(image.shape[:2], detections)
    bgr = _overlay_bgr(_bgr(image), labels, _lookup(labels, _BGR_LUT), detections, classes)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _overlay_bgr(bgr: np.ndarray, labels: np.ndarray, colors: np.ndarray, detections: list[Detection],
                 classes: dict[int, str]) -> np.ndarray:
    """`draw_overlay` in BGR, in place on `bgr` (the writer's copy): `colors` is `labels` in BGR colours.

    Every step works on each channel alike, so this is `draw_overlay` with the channels swapped.
    """
    h, w = bgr.shape[:2]
    # Blended in uint8: float64 copies of the masked pixels took 85 MiB (16 MiB now) on a half-covered
    # 1800x1200 photo, in the writer thread, on top of the model's own peak.
    tinted = cv2.addWeighted(bgr, 1 - OVERLAY_ALPHA, colors, OVERLAY_ALPHA, 0)
    out = cv2.copyTo(tinted, labels, bgr)  # where a label is, the tint (np.where took 10x as long)

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
        bgr_color = color[::-1]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), bgr_color, box_thickness)

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
        cv2.rectangle(out, (tx, ty), (tx + box_w - 1, ty + box_h - 1), bgr_color, cv2.FILLED)
        ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        cv2.putText(out, text, (tx + pad, ty + pad + th), font, scale, ink, text_thickness, cv2.LINE_AA)
    return out


class TargetWriter:
    """Writes one target's files under output_dir.

    Usage: `TargetWriter(out_dir, {1: "scratch"}).write("img_001", rgb, detections)`.
    """

    def __init__(self, output_dir: str | os.PathLike | OutputFolder, classes: dict[int, str]):
        self.folder = output_dir if isinstance(output_dir, OutputFolder) else OutputFolder(output_dir)
        self.classes = classes
        for name in TARGET_FOLDERS:
            (self.folder.root / name).mkdir(parents=True, exist_ok=True)

    def write(self, stem: str, image: np.ndarray, detections: list[Detection]) -> None:
        """Write id_masks/<stem>_id<k>.png, masks/<stem>.png, labels/<stem>.png, overlays/<stem>.jpg, bboxes/<stem>.txt."""
        _check_image(image)
        shape = image.shape[:2]
        folder = self.folder
        for d in detections:
            path = folder.id_mask(stem, d.id)
            if d.present:
                atomic_write_bytes(path, _encode(".png", _mask(d, shape).astype(np.uint8) * 255))
            else:
                path.unlink(missing_ok=True)  # a stale mask from an earlier run
        labels = label_map(shape, detections)
        colors = _lookup(labels, _BGR_LUT)  # the colour mask, in BGR for OpenCV
        atomic_write_bytes(folder.color_mask(stem), _encode(".png", colors))
        atomic_write_bytes(folder.label_map(stem), _encode(".png", labels))
        overlay = _overlay_bgr(_bgr(image), labels, colors, detections, self.classes)
        atomic_write_bytes(folder.overlay(stem), _encode(".jpg", overlay, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]))
        lines = [
            f"{d.id} " + " ".join(str(v) for v in d.bbox)
            for d in sorted(detections, key=lambda d: d.id)
            if d.bbox is not None
        ]
        atomic_write_text(folder.bboxes(stem), "".join(line + "\n" for line in lines))


class ResultsTable:
    """results.csv: a rendering of target records, a row per target and object, written atomically in one go.

    Usage: `t = ResultsTable(classes); t.add_target("a.jpg", dets); t.add_failure("b.jpg", "why"); t.write(p)`.
    """

    COLUMNS = ["image", "id", "class", "score", "logit", "area", "bbox", "status", "error", "review"]

    def __init__(self, classes: dict[int, str], records: list[TargetRecord] = ()):
        self.classes = classes
        self.records: list[TargetRecord] = list(records)

    def add_record(self, record: TargetRecord) -> None:
        self.records.append(record)

    def add_target(self, image_name: str, detections: list[Detection]) -> None:
        """A labeled target: one row per detection (present or absent), in ID order."""
        self.add_record(TargetRecord.from_detections(Path(image_name), Path(image_name).stem, detections))

    def add_failure(self, image_name: str, reason: str) -> None:
        """A target that could not be read or labeled: one `failed` row."""
        self.add_record(TargetRecord(Path(image_name), Path(image_name).stem, "failed",
                                     error=" ".join(str(reason).split())))

    @property
    def rows(self) -> list[dict[str, str]]:
        rows = []
        for record in self.records:
            if record.status == "failed":
                row = dict.fromkeys(self.COLUMNS, "")
                row.update(image=record.name, status="failed", error=record.error, review=record.review_state)
                rows.append(row)
                continue
            for o in sorted(record.objects, key=lambda o: o.id):
                rows.append({
                    "image": record.name,
                    "id": str(o.id),
                    "class": class_name(self.classes, o.id),
                    "score": f"{o.score:.4f}",
                    "logit": f"{o.logit:.4f}",
                    "area": str(o.area),
                    "bbox": " ".join(str(v) for v in o.bbox) if o.bbox is not None else "",
                    "status": "present" if o.present else "absent",
                    "error": "",
                    "review": record.review_state,
                })
        return rows

    @property
    def targets(self) -> int:
        """Targets labeled, failures excluded."""
        return sum(r.status == "labeled" for r in self.records)

    @property
    def failures(self) -> int:
        """Number of failed targets."""
        return sum(r.status == "failed" for r in self.records)

    def present_counts(self) -> dict[int, int]:
        """Object ID -> number of targets it is present on (IDs seen only as absent map to 0)."""
        counts: dict[int, int] = {}
        for record in self.records:
            for o in record.objects:
                counts[o.id] = counts.get(o.id, 0) + o.present
        return dict(sorted(counts.items()))

    def write(self, path: Path) -> None:
        """Write all rows to `path` (header first), atomically."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(path, buf.getvalue())


def save_records(folder: OutputFolder, manifest: Manifest, targets: list[Path], classes: dict[int, str]) -> None:
    """manifest.json, then results.csv rendered from its records of `targets` (each written atomically)."""
    manifest.save()
    ResultsTable(classes, manifest.records(targets)).write(folder.results_csv)


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")


def _mask(d: Detection, shape: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(d.mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"object {d.id}: mask shape {mask.shape} != image size {tuple(shape)}")
    return mask


def _bgr(rgb: np.ndarray) -> np.ndarray:
    """A BGR copy of an RGB image (cvtColor: a tenth of numpy's strided copy's time)."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


_RGB_LUT = np.array([[color_for(i) for i in range(256)]], dtype=np.uint8)  # (1, 256, 3): cv2.LUT's table
_BGR_LUT = np.ascontiguousarray(_RGB_LUT[:, :, ::-1])


def _lookup(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: each label's colour from a (1, 256, 3) table (cv2.LUT: a fifth of numpy's gather)."""
    return cv2.LUT(cv2.merge([labels, labels, labels]), lut)


def _encode(ext: str, array: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, array, params or [])
    if not ok:
        raise OSError(f"could not encode {ext} image")
    return buf.tobytes()
