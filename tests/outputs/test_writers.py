"""Tests for labeler.outputs.writers: per-target files and results.csv."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from labeler.outputs.writers import (
    ResultsTable,
    TargetWriter,
    class_name,
    draw_overlay,
    label_map,
)
from labeler.types.detections import Detection
from labeler.utils.colors import color_for

H, W = 120, 160
CLASSES = {1: "scratch", 3: "dent"}


def rect_mask(y0: int, y1: int, x0: int, x1: int, shape=(H, W)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def grey_image(shape=(H, W), value=128) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.uint8)


def scene() -> list[Detection]:
    """Objects 1 and 2 overlap (2 has the higher logit), object 3 is absent."""
    return [
        Detection(1, 2.0, rect_mask(10, 60, 20, 90), present=True),
        Detection(2, 3.0, rect_mask(40, 100, 70, 140), present=True),
        Detection(3, -4.0, np.zeros((H, W), bool), present=False),
    ]


def read_gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    assert img.ndim == 2 and img.dtype == np.uint8
    return img


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[:, :, ::-1]


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def written(tmp_path: Path):
    dets = scene()
    TargetWriter(tmp_path, CLASSES).write("img_001", grey_image(), dets)
    return tmp_path, dets


def test_exact_file_names(written):
    out, _ = written
    names = sorted(p.relative_to(out).as_posix() for p in all_files(out))
    assert names == [
        "bboxes/img_001.txt",
        "id_masks/img_001_id1.png",
        "id_masks/img_001_id2.png",
        "labels/img_001.png",
        "masks/img_001.png",
        "overlays/img_001.jpg",
    ]


def test_id_masks_are_binary_and_equal_masks(written):
    out, dets = written
    for d in dets[:2]:
        m = read_gray(out / "id_masks" / f"img_001_id{d.id}.png")
        assert m.shape == (H, W)
        assert set(np.unique(m)) == {0, 255}
        np.testing.assert_array_equal(m == 255, d.mask)


def test_label_map_overlap_rule(written):
    out, dets = written
    labels = read_gray(out / "labels" / "img_001.png")
    m1, m2 = dets[0].mask, dets[1].mask
    expected = np.zeros((H, W), np.uint8)
    expected[m1] = 1
    expected[m2] = 2  # higher logit wins the overlap
    np.testing.assert_array_equal(labels, expected)
    assert (m1 & m2).any()  # the scene really overlaps
    # Every non-zero label k lies in id mask k; every id-mask pixel is labeled.
    for k in (1, 2):
        idm = read_gray(out / "id_masks" / f"img_001_id{k}.png") == 255
        assert idm[labels == k].all()
        assert (labels[idm] > 0).all()


def test_overlap_lower_id_with_higher_logit_wins():
    dets = [
        Detection(5, 1.0, rect_mask(0, 50, 0, 50), present=True),
        Detection(2, 4.0, rect_mask(25, 75, 25, 75), present=True),
    ]
    labels = label_map((H, W), dets)
    assert labels[30, 30] == 2
    assert labels[10, 10] == 5 and labels[70, 70] == 2


def test_overlap_tie_higher_id_wins():
    dets = [
        Detection(7, 1.5, rect_mask(0, 50, 0, 50), present=True),
        Detection(4, 1.5, rect_mask(25, 75, 25, 75), present=True),
    ]
    assert label_map((H, W), dets)[30, 30] == 7
    assert label_map((H, W), dets[::-1])[30, 30] == 7


def test_color_mask_matches_labels(written):
    out, _ = written
    labels = read_gray(out / "labels" / "img_001.png")
    colour = read_rgb(out / "masks" / "img_001.png")
    assert colour.shape == (H, W, 3)
    for k in np.unique(labels):
        assert (colour[labels == k] == np.array(color_for(int(k)), np.uint8)).all(), k
    assert (colour[labels == 0] == 0).all()


def test_bboxes_file(written):
    out, dets = written
    lines = (out / "bboxes" / "img_001.txt").read_text().splitlines()
    expected = []
    for d in dets[:2]:
        ys, xs = np.nonzero(d.mask)
        expected.append(f"{d.id} {xs.min()} {ys.min()} {xs.max() + 1} {ys.max() + 1}")
    assert lines == expected == ["1 20 10 90 60", "2 70 40 140 100"]


def test_bboxes_sorted_by_id(tmp_path):
    dets = [
        Detection(9, 1.0, rect_mask(0, 5, 0, 5), present=True),
        Detection(3, 1.0, rect_mask(10, 20, 30, 40), present=True),
    ]
    TargetWriter(tmp_path, {}).write("t", grey_image(), dets)
    assert (tmp_path / "bboxes" / "t.txt").read_text() == "3 30 10 40 20\n9 0 0 5 5\n"


def test_overlay_tints_masks_in_object_colour(written):
    out, dets = written
    image = grey_image()
    overlay = read_rgb(out / "overlays" / "img_001.jpg")
    assert overlay.shape == image.shape
    # Deep inside object 1 only (away from its box and label): tinted toward (230, 25, 75).
    px = overlay[30:35, 40:50].reshape(-1, 3).mean(axis=0)
    expected = 0.5 * np.array([128, 128, 128]) + 0.5 * np.array(color_for(1))
    assert np.abs(px - expected).max() < 12
    # Far from every object the image is unchanged (up to JPEG noise).
    assert np.abs(overlay[105:, :15].astype(int) - 128).max() < 6


def test_draw_overlay_returns_new_rgb_array():
    image = grey_image()
    dets = scene()
    result = draw_overlay(image, dets, CLASSES)
    assert result.shape == image.shape and result.dtype == np.uint8
    assert (image == 128).all()  # input untouched
    inside = dets[0].mask | dets[1].mask
    assert (result[inside] != 128).any(axis=1).all()
    assert (result[~inside] != 128).any()  # boxes and labels are drawn too


def test_draw_overlay_without_present_objects_is_the_image():
    image = grey_image()
    dets = [Detection(1, -3.0, np.zeros((H, W), bool), present=False)]
    np.testing.assert_array_equal(draw_overlay(image, dets, {}), image)


@pytest.mark.parametrize("size", [300, 4000])
def test_overlay_labels_scale_with_image(size):
    """The label (drawn above the box) spans a similar fraction of small and large images."""
    image = np.zeros((size, size, 3), np.uint8)
    q = size // 3
    mask = rect_mask(q, 2 * q, q, 2 * q, shape=(size, size))
    result = draw_overlay(image, [Detection(1, 2.5, mask, present=True)], {1: "scratch"})
    above = (result[: q - size // 100] != 0).any(axis=2)  # everything above the box outline
    height = above.any(axis=1).sum() / size
    width = above.any(axis=0).sum() / size
    assert 0.015 < height < 0.08
    assert 0.15 < width < 0.5


def test_label_of_object_at_the_edge_stays_inside(tmp_path):
    """A box touching the top-right corner puts its label inside the image, left of the edge."""
    image = np.zeros((300, 300, 3), np.uint8)
    mask = rect_mask(0, 40, 260, 300, shape=(300, 300))
    result = draw_overlay(image, [Detection(1, 2.5, mask, present=True)], {1: "a_rather_long_class_name"})
    solid = (result == np.array(color_for(1), np.uint8)).all(axis=2)  # box outline and label fill
    label_rows = np.nonzero(solid[:, :259].any(axis=1))[0]  # the box itself starts at column 260
    assert len(label_rows) > 5 and label_rows.max() < 40  # inside the top of the box, not above the image
    cols = np.nonzero(solid[label_rows].any(axis=0))[0]
    # The filled label extends well left of the box and reaches the right edge, not past it.
    assert cols.min() < 150
    assert solid[label_rows, 290:299].all(axis=1).any()


def test_empty_target_writes_empty_files(tmp_path):
    # A stale id mask from an earlier run must go away once the object is absent.
    TargetWriter(tmp_path, {}).write("empty", grey_image(), scene())
    assert (tmp_path / "id_masks" / "empty_id1.png").exists()
    dets = [Detection(k, -5.0, np.zeros((H, W), bool), present=False) for k in (1, 2, 3)]
    TargetWriter(tmp_path, {}).write("empty", grey_image(), dets)
    assert list((tmp_path / "id_masks").iterdir()) == []
    assert (tmp_path / "bboxes" / "empty.txt").read_text() == ""
    assert (read_gray(tmp_path / "labels" / "empty.png") == 0).all()
    colour = read_rgb(tmp_path / "masks" / "empty.png")
    assert colour.shape == (H, W, 3) and (colour == 0).all()
    overlay = read_rgb(tmp_path / "overlays" / "empty.jpg")
    assert overlay.shape == (H, W, 3)
    assert np.abs(overlay.astype(int) - 128).max() < 6


def test_no_temporary_files_remain(tmp_path):
    writer = TargetWriter(tmp_path, CLASSES)
    writer.write("a", grey_image(), scene())
    writer.write("a", grey_image(), scene())  # overwrite in place
    table = ResultsTable(CLASSES)
    table.add_target("a.jpg", scene())
    table.write(tmp_path / "results.csv")
    files = all_files(tmp_path)
    assert files
    assert [p for p in files if p.name.startswith(".") or p.suffix == ".tmp"] == []


def test_writer_rejects_mismatched_mask(tmp_path):
    dets = [Detection(1, 2.0, np.ones((10, 10), bool), present=True)]
    with pytest.raises(ValueError, match="mask shape"):
        TargetWriter(tmp_path, {}).write("bad", grey_image(), dets)


def test_class_name():
    assert class_name(CLASSES, 1) == "scratch"
    assert class_name(CLASSES, 2) == "object_2"


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_results_csv(tmp_path):
    table = ResultsTable(CLASSES)
    table.add_target("img_001.jpg", scene())
    table.add_target("empty.png", [Detection(k, -5.0, np.zeros((H, W), bool), present=False) for k in (1, 2, 3)])
    table.add_failure("broken.jpg", "cannot decode\nimage")
    path = tmp_path / "results.csv"
    table.write(path)

    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["image", "id", "class", "score", "logit", "area", "bbox", "status", "error",
                                     "review"]
        rows = list(reader)
    assert len(rows) == 3 + 3 + 1

    r1, r2, r3 = rows[:3]
    assert r1 == {
        "image": "img_001.jpg", "id": "1", "class": "scratch", "score": f"{sigmoid(2.0):.4f}",
        "logit": "2.0000", "area": str(50 * 70), "bbox": "20 10 90 60", "status": "present", "error": "",
        "review": "unreviewed",
    }
    assert r2["class"] == "object_2" and r2["area"] == str(60 * 70) and r2["bbox"] == "70 40 140 100"
    assert r2["score"] == "0.9526" and r2["status"] == "present"
    assert r3 == {
        "image": "img_001.jpg", "id": "3", "class": "dent", "score": f"{sigmoid(-4.0):.4f}",
        "logit": "-4.0000", "area": "0", "bbox": "", "status": "absent", "error": "",
        "review": "unreviewed",
    }
    assert [r["status"] for r in rows[3:6]] == ["absent"] * 3
    assert {r["image"] for r in rows[3:6]} == {"empty.png"}
    assert rows[6]["image"] == "broken.jpg" and rows[6]["status"] == "failed"
    assert rows[6]["error"] == "cannot decode image"
    assert all(rows[6][c] == "" for c in ("id", "class", "score", "logit", "area", "bbox"))


def test_results_summary_helpers():
    table = ResultsTable({})
    table.add_target("a.jpg", scene())
    table.add_target("b.jpg", scene()[1:])
    table.add_failure("c.jpg", "boom")
    assert table.failures == 1
    assert table.targets == 2
    assert table.present_counts() == {1: 1, 2: 2, 3: 0}
    assert len(table.rows) == 3 + 2 + 1
