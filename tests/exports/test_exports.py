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
from helpers import (
    IMAGE_SIZE,
    ROOT,
    check_outputs,
    run_main,
    save_jpeg,
    synthetic_image,
)
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from labeler.cli import main
from labeler.exports import parse_formats, write_exports
from labeler.exports.yolo import polygon_lines
from labeler.outputs.folder import Manifest, ObjectRecord, TargetRecord, output_stems
from labeler.outputs.report import MAX_SHOWN, render_report, review_order, sheet_size
from labeler.prompts.prompt_set import (
    ObjectGuides,
    PromptSet,
    ReferenceGuides,
    save_prompts,
)
from labeler.types.guides import class_name
from labeler.utils.images import upright_size

# pycocotools' decode under numpy 2 (its own code, harmless)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
MIN_IOU_ONE_PART = 0.98  # a YOLO line drawn as Ultralytics draws it, against a mask of one part (holes filled)
MIN_MEAN_IOU = 0.9  # the same, mean over the noise masks of untrained weights (many parts each)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background region not connected to the border filled (flood fill, not contours)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    reached = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, reached, (0, 0), 2, flags=4)
    return (padded != 2)[1:-1, 1:-1]


def ultralytics_draw(line: str, width: int, height: int) -> tuple[int, np.ndarray]:
    """(class, mask) of one YOLO line, drawn as Ultralytics 8.4 does (`polygon2mask`): coordinates scaled to the
    image's pixels, truncated to integers (`astype(np.int32)`), filled with cv2.fillPoly."""
    values = line.split()
    coords = np.array(values[1:], dtype=np.float32).reshape(-1, 2)
    assert len(coords) >= 3 and all(len(v.split(".")[1]) == 6 for v in values[1:])
    assert (coords >= 0).all() and (coords <= 1).all()
    polygon = np.asarray([coords * np.array([width, height], dtype=np.float32)]).astype(np.int32)
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, polygon.reshape(1, -1, 2), 1)
    return int(values[0]), canvas > 0


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
    """yolo/ as Ultralytics reads it: data.yaml with path, train, val and the classes; images/ beside labels/;
    one line per present object, whose drawing matches its mask (holes filled). Returns those IoUs."""
    root = out / "yolo"
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert data["nc"] == len(object_ids)
    assert data["names"] == {i: class_name(classes, k) for i, k in enumerate(object_ids)}
    assert (data["path"], data["train"], data["val"]) == (str(root.absolute()), "train.txt", "val.txt")
    train, val = ((root / name).read_text().splitlines() for name in ("train.txt", "val.txt"))
    stems = output_stems(targets)
    assert sorted(train + val) == sorted(f"./images/{s}{t.suffix}" for s, t in zip(stems, targets))
    assert val and (not set(train) & set(val) or len(targets) == 1)
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    ious = []
    for target, stem in zip(targets, stems):
        assert (root / "images" / f"{stem}{target.suffix}").read_bytes() == target.read_bytes()
        w, h = upright_size(target)
        lines = (root / "labels" / f"{stem}.txt").read_text().splitlines()
        present = [int(r["id"]) for r in rows if r["image"] == target.name and r["status"] == "present"]
        drawn = dict(ultralytics_draw(line, w, h) for line in lines)
        assert len(lines) == len(drawn) == len(present), "one line per present object"
        assert set(drawn) == {object_ids.index(k) for k in present}
        for k in present:
            # YOLO polygons can't have holes: compare with the mask whose holes are filled.
            ious.append(iou(drawn[object_ids.index(k)], fill_holes(read_mask(out, stem, k))))
    assert not ious or np.mean(ious) >= MIN_MEAN_IOU, np.mean(ious)
    return ious


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


def test_an_object_in_two_parts_gives_one_line_and_an_exact_rle(tmp_path):
    """Through write_exports directly: a synthetic mask of two parts, one with a hole, and a stray pixel."""
    target = save_jpeg(synthetic_image(3, size=(120, 90)), tmp_path / "targets" / "img.jpg")
    out = tmp_path / "out"
    mask = np.zeros((90, 120), dtype=bool)
    mask[10:40, 10:50] = True
    mask[20:30, 20:30] = False  # a hole
    mask[50:80, 70:110] = True
    mask[5, 115] = True  # a single pixel
    (out / "id_masks").mkdir(parents=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(out / "id_masks" / "img_id7.png")
    manifest = Manifest(out / "manifest.json")
    manifest.record("fp", TargetRecord(target, "img", "labeled", [
        ObjectRecord(3, math.log(0.1 / 0.9), False), ObjectRecord(7, math.log(0.8 / 0.2), True, int(mask.sum()), (10, 5, 116, 80)),
    ]))
    manifest.save()
    written = write_exports(out, [target], {7: "crack"}, "coco, yolo", object_ids=[3, 7])
    assert written == [out / "coco.json", out / "yolo"]

    (line,) = (out / "yolo" / "labels" / "img.txt").read_text().splitlines()  # one object, one line
    cls, drawn = ultralytics_draw(line, 120, 90)
    assert cls == 1  # ID 7 is index 1 of [3, 7]
    # Both parts and the pixel exactly, the hole filled, plus the one-pixel-wide bridges joining them:
    # rectangle to rectangle (49, 39)-(70, 50), 21 pixels, and the second rectangle to the pixel (109, 50)-(115, 5), 45.
    assert not (fill_holes(mask) & ~drawn).any()
    assert (drawn & ~fill_holes(mask)).sum() <= 21 + 45
    assert polygon_lines(mask, 4)[0].startswith("4 ")
    assert yaml.safe_load((out / "yolo" / "data.yaml").read_text())["names"] == {0: "object_3", 1: "crack"}
    assert (out / "yolo" / "train.txt").read_text() == (out / "yolo" / "val.txt").read_text() == "./images/img.jpg\n"

    coco = COCO(str(out / "coco.json"))
    (ann,) = coco.dataset["annotations"]
    np.testing.assert_array_equal(mask_util.decode(coco.annToRLE(ann)).astype(bool), mask)  # hole and pixel kept
    assert ann["area"] == mask.sum() and ann["bbox"] == [10, 5, 106, 75] and ann["score"] == pytest.approx(0.8, abs=1e-12)  # full precision
    assert coco.dataset["images"] == [{"id": 1, "file_name": "img.jpg", "width": 120, "height": 90, "review": "unreviewed"}]
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


@pytest.mark.parametrize("seed", range(6))
def test_a_mask_of_one_part_survives_ultralytics_truncation(seed):
    """Random blobs, one part each, holes and all: the line drawn the Ultralytics way gives the mask, holes filled."""
    rng = np.random.default_rng(seed)
    h, w = rng.integers(60, 700, 2)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(5):
        cv2.ellipse(mask, (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4))),
                    (int(rng.integers(5, w // 4)), int(rng.integers(5, h // 4))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    count, labels = cv2.connectedComponents(mask)
    mask = labels == 1 + np.argmax(np.bincount(labels.ravel())[1:])  # the largest part
    (line,) = polygon_lines(mask, 0)
    _, drawn = ultralytics_draw(line, w, h)
    assert iou(drawn, fill_holes(mask)) >= MIN_IOU_ONE_PART
    np.testing.assert_array_equal(drawn, fill_holes(mask))  # exactly, as contour points are pixel centres


def test_yolo_split_is_fixed_and_holds_the_fraction():
    from labeler.exports.yolo import split

    names = [f"./images/{n:03d}.jpg" for n in range(50)]
    train, val = split(names, 0.1)
    assert len(val) == 5 and sorted(train + val) == names and split(names, 0.1) == (train, val)
    assert split(names[:3], 0.1)[1] and len(split(names[:3], 0.1)[0]) == 2
    assert split(names[:1], 0.5) == (names[:1], names[:1])
