"""COCO and YOLO exports and the review sheet: headless runs with --formats, validated the way the tools read them."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from conftest import IMAGE_SIZE, save_jpeg, synthetic_image
from labeler.cli import main
from labeler.exports import parse_formats, write_exports
from labeler.exports.yolo import polygon_lines
from labeler.images import upright_size
from labeler.output_folder import Manifest, ObjectRecord, TargetRecord, output_stems
from labeler.guides import class_name
from labeler.prompts import ObjectGuides, PromptSet, ReferenceGuides, save_prompts
from labeler.report import MAX_SHOWN, render_report, review_order, sheet_size
from test_cli import ROOT, check_outputs, run_main

# pycocotools' decode under numpy 2 (its own code, harmless)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
MIN_AREA = 400  # YOLO polygons are checked on objects of at least this many pixels
MIN_IOU = 0.95


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background region not connected to the border filled (flood fill, not contours)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    reached = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, reached, (0, 0), 2, flags=4)
    return (padded != 2)[1:-1, 1:-1]


def rasterize(lines: list[str], width: int, height: int) -> dict[int, np.ndarray]:
    """Class index -> union of its YOLO polygons drawn with cv2.fillPoly at the image size."""
    out: dict[int, np.ndarray] = {}
    for line in lines:
        values = line.split()
        cls, coords = int(values[0]), np.array(values[1:], dtype=np.float64).reshape(-1, 2)
        assert len(coords) >= 3 and all(len(v.split(".")[1]) == 6 for v in values[1:])
        assert (coords >= 0).all() and (coords <= 1).all()
        points = np.rint(coords * [width, height]).astype(np.int32).reshape(-1, 1, 2)
        canvas = out.setdefault(cls, np.zeros((height, width), np.uint8))
        cv2.fillPoly(canvas, [points], 1)
    return {k: v > 0 for k, v in out.items()}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def read_mask(out: Path, stem: str, obj_id: int) -> np.ndarray:
    return np.asarray(Image.open(out / "id_masks" / f"{stem}_id{obj_id}.png")) == 255


def check_coco(out: Path, targets: list[Path], classes: dict[int, str], object_ids: list[int]) -> COCO:
    """pycocotools loads coco.json; every annotation decodes to exactly its id mask; sizes, names, rows agree."""
    coco = COCO(str(out / "coco.json"))
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == {
        k: class_name(classes, k) for k in object_ids}
    images = {img["file_name"]: img for img in coco.dataset["images"]}
    assert list(images) == [t.name for t in targets]
    for target, stem in zip(targets, output_stems(targets)):
        img = images[target.name]
        assert (img["width"], img["height"]) == upright_size(target)
        present = {int(r["id"]): r for r in rows if r["image"] == target.name and r["status"] == "present"}
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        assert sorted(a["category_id"] for a in anns) == sorted(present)
        for ann in anns:
            row, mask = present[ann["category_id"]], read_mask(out, stem, ann["category_id"])
            decoded = mask_util.decode(coco.annToRLE(ann)).astype(bool)
            np.testing.assert_array_equal(decoded, mask)
            assert ann["area"] == mask.sum() == int(row["area"])
            x0, y0, x1, y1 = map(int, row["bbox"].split())
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert ann["score"] == pytest.approx(float(row["score"]), abs=5e-5) and ann["iscrowd"] == 0  # full precision
    assert len(coco.dataset["annotations"]) == sum(r["status"] == "present" for r in rows)
    return coco


def check_yolo(out: Path, targets: list[Path], classes: dict[int, str], object_ids: list[int]) -> list[float]:
    """data.yaml names the classes; each present object's polygons, drawn back, match its mask (holes filled).

    Returns the IoU of every checked object with its mask as it is (holes included), for information.
    """
    data = yaml.safe_load((out / "yolo" / "data.yaml").read_text())
    assert data["nc"] == len(object_ids)
    assert data["names"] == {i: class_name(classes, k) for i, k in enumerate(object_ids)}
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    raw_ious = []
    for target, stem in zip(targets, output_stems(targets)):
        w, h = upright_size(target)
        drawn = rasterize((out / "yolo" / "labels" / f"{stem}.txt").read_text().splitlines(), w, h)
        present = [int(r["id"]) for r in rows if r["image"] == target.name and r["status"] == "present"]
        assert set(drawn) <= {object_ids.index(k) for k in present}
        for k in present:
            mask = read_mask(out, stem, k)
            if mask.sum() < MIN_AREA:
                continue
            polygons = drawn[object_ids.index(k)]
            # YOLO polygons can't have holes: compare with the mask whose holes are filled.
            assert iou(polygons, fill_holes(mask)) >= MIN_IOU, (stem, k)
            raw_ious.append(iou(polygons, mask))
    return raw_ious


def test_demo_exports_are_rebuilt_from_the_output_folder(test_checkpoint, tmp_path):
    """A first run without --formats; the rerun with them labels nothing and exports every target."""
    out = tmp_path / "out"
    common = ["--prompts", "assets/demo/prompts.json", "--targets", "assets/demo/targets", "--output", out,
              "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE]
    first = run_main(*common)
    assert first.returncode == 0, first.stderr
    assert (out / "report.png").is_file() and not (out / "coco.json").exists() and not (out / "yolo").exists()
    second = run_main(*common, "--formats", "coco,yolo")
    assert second.returncode == 0, second.stderr
    assert "6 targets: 0 labeled, 6 already labeled" in second.stderr  # the formats don't relabel

    targets = sorted((ROOT / "assets/demo/targets").iterdir())
    check_outputs(out, targets, [1, 2])
    classes = {1: "disc", 2: "square"}
    check_coco(out, targets, classes, [1, 2])
    assert check_yolo(out, targets, classes, [1, 2])
    assert Image.open(out / "report.png").size == sheet_size(6)


def test_real_photo_exports(real_data, test_checkpoint, tmp_path):
    """Real photos of different sizes, one EXIF-rotated, two sharing a stem; IDs 1 and 3, one named."""
    truck = real_data / "photos" / "truck.jpg"
    prompts = PromptSet([ReferenceGuides(truck, 1800, 1200, [
        ObjectGuides(1, box=(425, 600, 700, 875)),
        ObjectGuides(3, points=[(900, 500), (1500, 1100)], labels=[1, 0]),
    ])], classes={1: "wheel"})
    prompts_file = tmp_path / "prompts.json"
    save_prompts(prompts, prompts_file)
    targets_dir = tmp_path / "targets"
    targets_dir.mkdir()
    for p in (real_data / "photos" / "groceries.jpg", truck):
        (targets_dir / p.name).symlink_to(p)
    (targets_dir / "groceries.png").symlink_to(real_data / "photos" / "groceries.jpg")  # groceries_jpg, _png
    rotated = Image.open(real_data / "bedroom" / "00024.jpg")
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotated 90° to be viewed upright
    rotated.save(targets_dir / "rotated.jpg", exif=exif, quality=90)
    out = tmp_path / "out"
    result = run_main("--prompts", prompts_file, "--targets", targets_dir, "--output", out, "--formats", "coco,yolo",
                      "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE)
    assert result.returncode == 0, result.stderr

    targets = sorted(targets_dir.iterdir())
    assert upright_size(targets_dir / "rotated.jpg") == (540, 960)
    check_outputs(out, targets, [1, 3])
    coco = check_coco(out, targets, prompts.classes, [1, 3])
    assert [c["name"] for c in coco.dataset["categories"]] == ["wheel", "object_3"]
    assert len(check_yolo(out, targets, prompts.classes, [1, 3])) >= 5
    assert "# Images: " + str(targets_dir.resolve()) in (out / "yolo" / "data.yaml").read_text()
    assert (out / "yolo" / "labels" / "groceries_png.txt").is_file()
    assert Image.open(out / "report.png").size == sheet_size(len(targets))


def test_an_object_in_two_parts_gives_two_polygons_and_an_exact_rle(tmp_path):
    """Through write_exports directly: a synthetic mask of two parts, one with a hole, and a stray pixel."""
    target = save_jpeg(synthetic_image(3, size=(120, 90)), tmp_path / "targets" / "img.jpg")
    out = tmp_path / "out"
    mask = np.zeros((90, 120), dtype=bool)
    mask[10:40, 10:50] = True
    mask[20:30, 20:30] = False  # a hole
    mask[50:80, 70:110] = True
    mask[5, 115] = True  # a single pixel: fewer than 3 points, no polygon
    (out / "id_masks").mkdir(parents=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(out / "id_masks" / "img_id7.png")
    manifest = Manifest(out / "manifest.json")
    manifest.record("fp", TargetRecord(target, "img", "labeled", [
        ObjectRecord(3, math.log(0.1 / 0.9), False), ObjectRecord(7, math.log(0.8 / 0.2), True, int(mask.sum()), (10, 5, 116, 80)),
    ]))
    manifest.save()
    written = write_exports(out, [target], {7: "crack"}, "coco, yolo", object_ids=[3, 7])
    assert written == [out / "coco.json", out / "yolo"]

    lines = (out / "yolo" / "labels" / "img.txt").read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("1 ") for line in lines)  # ID 7 is index 1 of [3, 7]
    parts = [rasterize([line], 120, 90)[1] for line in lines]
    assert sorted(p.sum() for p in parts) == [30 * 40, 30 * 40]  # each part exactly, its hole filled
    stray = np.zeros_like(mask)
    stray[5, 115] = True
    np.testing.assert_array_equal(parts[0] | parts[1], fill_holes(mask) & ~stray)
    assert polygon_lines(mask, 4)[0].startswith("4 ")
    assert yaml.safe_load((out / "yolo" / "data.yaml").read_text())["names"] == {0: "object_3", 1: "crack"}

    coco = COCO(str(out / "coco.json"))
    (ann,) = coco.dataset["annotations"]
    np.testing.assert_array_equal(mask_util.decode(coco.annToRLE(ann)).astype(bool), mask)  # hole and pixel kept
    assert ann["area"] == mask.sum() and ann["bbox"] == [10, 5, 106, 75] and ann["score"] == pytest.approx(0.8, abs=1e-12)  # full precision
    assert coco.dataset["images"] == [{"id": 1, "file_name": "img.jpg", "width": 120, "height": 90}]
    assert json.loads((out / "coco.json").read_text())["categories"][0] == {
        "id": 3, "name": "object_3", "supercategory": "object"}


def _item(name: str, *scores: float) -> TargetRecord:
    """A labeled target whose object k has score scores[k-1] (a negative score: absent)."""
    objects = [ObjectRecord(k, math.log(s / (1 - s)) if s >= 0 else -4.6, s >= 0) for k, s in enumerate(scores, start=1)]
    return TargetRecord(Path(name), Path(name).stem, "labeled", objects)


def test_review_sheet_order_is_lowest_score_first_and_at_most_48():
    items = [_item("a.jpg", 0.9, 0.6), _item("b.jpg", 0.7), _item("none.jpg", -1, -1), _item("c.jpg", 0.95, 0.55),
             _item("d.jpg", 0.7)]
    # By the lowest score of the objects found; nothing found counts as 0; ties keep the target order.
    assert [i.path.name for i in review_order(items)] == ["none.jpg", "c.jpg", "a.jpg", "b.jpg", "d.jpg"]
    many = [_item(f"{n:03d}.jpg", 0.5 + n / 200) for n in range(60)][::-1]
    shown = review_order(many)
    assert len(shown) == MAX_SHOWN == 48
    assert [i.path.name for i in shown] == [f"{n:03d}.jpg" for n in range(48)]
    assert sheet_size(48)[1] > sheet_size(8)[1] > sheet_size(0)[1] and sheet_size(1) == sheet_size(8)
    # Drawn: 48 cells (missing overlays show as grey placeholders), the size sheet_size says.
    png = render_report(Path("nowhere"), many, {1: "disc"}, [1, 2], total=61, failed=1)
    assert Image.open(io.BytesIO(png)).size == sheet_size(48) == (1600, 56 + 310 + 6 * 186 + 10)


def test_formats_option_and_config():
    assert parse_formats("yolo, COCO,yolo") == ["yolo", "coco"]
    assert parse_formats("") == parse_formats(None) == parse_formats([]) == []
    assert parse_formats(["coco"]) == ["coco"]
    with pytest.raises(ValueError, match="unknown export format 'voc'"):
        parse_formats("coco,voc")
    with pytest.raises(SystemExit) as stop:
        main(["--headless", "--formats", "voc"])
    assert stop.value.code == 2
