"""Review and correct, through the library: accept, exclude, correct, teach, clear; reviews survive reruns."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import IMAGE_SIZE, ROOT, run_main
from PIL import Image

import labeler
from labeler.review.session import Review

DEMO = ROOT / "assets" / "demo"


def rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "results.csv").read_text().splitlines()))


def files_of(out: Path, stem: str) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for sub in ("id_masks", "masks", "labels", "overlays", "bboxes") for p in (out / sub).glob(f"{stem}*")}


def test_accept_exclude_correct_are_saved_at_once(out):
    with Review.open(out) as review:
        order = [r.name for r in review.order()]
        assert sorted(order) == [f"target0{k}.jpg" for k in range(1, 7)]
        first, second, third = order[:3]
        review.accept(first)
        review.exclude(second)
        before = {d.id: d for d in review.detections(review.record(third))}
        square = np.zeros_like(before[1].mask)
        square[10:40, 20:60] = True
        review.correct(third, {1: np.zeros_like(square), 2: square})  # a false positive erased, a mask drawn
        # Saved already, before the review ends: manifest, results.csv, the target's files.
        manifest = json.loads((out / "manifest.json").read_text())["targets"]
        assert [manifest[n]["review"]["state"] for n in (first, second, third)] == ["accepted", "excluded", "corrected"]
        assert manifest[third]["status"] == "labeled" and manifest[third]["review"]["ids"] == [1, 2]
        by_name = {(r["image"], r["id"]): r for r in rows(out)}
        assert by_name[(third, "1")]["status"] == "absent" and by_name[(third, "1")]["review"] == "corrected"
        assert float(by_name[(third, "1")]["logit"]) == pytest.approx(before[1].logit, abs=1e-4)  # SAM 2's, kept
        assert by_name[(third, "2")]["area"] == str(30 * 40) and by_name[(third, "2")]["bbox"] == "20 10 60 40"
        assert {r["review"] for r in rows(out) if r["image"] not in (first, second, third)} == {"unreviewed"}
        stem = Path(third).stem
        assert not (out / "id_masks" / f"{stem}_id1.png").exists()
        np.testing.assert_array_equal(np.asarray(Image.open(out / "id_masks" / f"{stem}_id2.png")) == 255, square)
        np.testing.assert_array_equal(np.asarray(Image.open(out / "labels" / f"{stem}.png")), square * 2)
        assert [r.name for r in review.order()][-3:] == sorted([first, second, third])  # reviewed last, target order
        assert review.counts() == {"targets": 6, "reviewed": 3, "corrected": 1, "excluded": 1, "taught": 0}
    with pytest.raises(labeler.UsageError, match="accept or correct it before teaching"):
        with Review.open(out) as review:
            review.teach(second)


def test_reviewed_targets_survive_reruns_with_other_prompts_and_force(out, test_checkpoint, tmp_path):
    with Review.open(out) as review:
        accepted, corrected = [r.name for r in review.order()][:2]
        review.accept(accepted)
        review.correct(corrected, {1: np.zeros(review.detections(review.record(corrected))[0].mask.shape, bool)})
    kept = {n: files_of(out, Path(n).stem) for n in (accepted, corrected)}
    kept_rows = [r for r in rows(out) if r["image"] in (accepted, corrected)]
    other = tmp_path / "other.json"
    prompts = labeler.PromptSet.load(DEMO / "prompts.json")
    prompts.references = prompts.references[:1]  # other prompts: a new fingerprint
    prompts.save(other)
    for memory in ("refs", "chain"):
        summary = labeler.label_batch(other, targets=out.parent / "targets", output=out, checkpoint=test_checkpoint,
                                      image_size=IMAGE_SIZE, memory=memory, force=True, progress=False)
        assert "6 targets: 4 labeled, 2 already labeled, 0 failed (2 reviewed, kept)" in str(summary)
        assert {n: files_of(out, Path(n).stem) for n in (accepted, corrected)} == kept
        assert [r for r in rows(out) if r["image"] in (accepted, corrected)] == kept_rows


def test_teaching_relabels_the_rest_as_a_fresh_run_with_the_taught_prompts(out, test_checkpoint, predictor, tmp_path,
                                                                           caplog):
    with Review.open(out) as review:
        taught = [r.name for r in review.order()][0]
        shape = review.detections(review.record(taught))[0].mask.shape
        disc = np.zeros(shape, bool)
        disc[60:120, 100:180] = True
        review.correct(taught, {1: disc, 2: np.zeros(shape, bool)})  # ID 2 a false positive: taught absent
        review.teach(taught)
        prompts = review.finish()
    ref = prompts.references[-1]
    assert ref.image == (out.parent / "targets" / taught).absolute()
    np.testing.assert_array_equal(ref.object(1).paint, disc)
    assert ref.object(1).box is None and not ref.object(1).points and ref.object(2).absent
    saved = json.loads((out / "prompts.json").read_text())["references"][-1]["objects"]
    assert saved[1] == {"id": 2, "absent": True} and set(saved[0]) == {"id", "paint"}
    assert labeler.PromptSet.load(out / "prompts.json") == prompts

    taught_files = files_of(out, Path(taught).stem)
    # As the review window relabels: in the same process, with the model it already loaded.
    summary = labeler.label_batch(prompts, targets=out.parent / "targets", output=out, checkpoint=test_checkpoint,
                                  image_size=IMAGE_SIZE, formats=("coco", "yolo"), progress=False, predictor=predictor)
    assert (summary.labeled, summary.reviewed) == (5, 1)
    assert files_of(out, Path(taught).stem) == taught_files
    fresh = tmp_path / "fresh"
    result = run_main("--prompts", out / "prompts.json", "--targets", out.parent / "targets", "--output", fresh,
                      "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE)
    assert result.returncode == 0, result.stderr
    for name in sorted(p.name for p in (out.parent / "targets").iterdir()):
        if name != taught:
            assert files_of(out, Path(name).stem) == files_of(fresh, Path(name).stem), name
    coco = json.loads((out / "coco.json").read_text())
    assert {i["file_name"]: i["review"] for i in coco["images"]}[taught] == "corrected"

    # A later run with other prompts says it drops the taught reference.
    with caplog.at_level("WARNING", logger="labeler"):
        labeler.label_batch(DEMO / "prompts.json", targets=out.parent / "targets", output=out,
                            checkpoint=test_checkpoint, image_size=IMAGE_SIZE, progress=False)
    assert "these prompts drop 1 reference(s) taught in a review" in caplog.text


def test_exports_leave_out_excluded_targets_and_can_hold_reviewed_ones_only(out, test_checkpoint):
    with Review.open(out) as review:
        accepted, excluded = [r.name for r in review.order()][:2]
        review.accept(accepted)
        review.exclude(excluded)
    kwargs = dict(targets=out.parent / "targets", output=out, checkpoint=test_checkpoint, image_size=IMAGE_SIZE,
                  formats=("coco", "yolo"), progress=False)
    assert labeler.label_batch(DEMO / "prompts.json", **kwargs).exit_code == 0
    images = {i["file_name"]: i["review"] for i in json.loads((out / "coco.json").read_text())["images"]}
    assert excluded not in images and images[accepted] == "accepted" and len(images) == 5
    assert set(images.values()) == {"accepted", "unreviewed"}
    assert labeler.label_batch(DEMO / "prompts.json", reviewed_only=True, **kwargs).exit_code == 0
    assert [i["file_name"] for i in json.loads((out / "coco.json").read_text())["images"]] == [accepted]
    assert (out / "yolo" / "train.txt").read_text() == (out / "yolo" / "val.txt").read_text()  # one image


def test_clear_drops_reviews_and_the_next_batch_relabels_them(out, test_checkpoint):
    with Review.open(out) as review:
        a, b = [r.name for r in review.order()][:2]
        review.accept(a)
        review.exclude(b)
        assert review.clear([b]) == 1
        assert review.record(b).review is None and review.record(a).review_state == "accepted"
    summary = labeler.label_batch(DEMO / "prompts.json", targets=out.parent / "targets", output=out,
                                  checkpoint=test_checkpoint, image_size=IMAGE_SIZE, progress=False)
    assert "6 targets: 1 labeled, 5 already labeled, 0 failed (1 reviewed, kept)" in str(summary)


KILLED_REVIEW = """
import sys, time
from labeler.review.session import Review
with Review.open(sys.argv[1]) as review:
    for record in review.order()[:3]:
        review.accept(record.name)
    print("accepted", flush=True)
    time.sleep(600)
"""


def test_a_killed_review_loses_nothing_accepted_and_resumes_where_it_stopped(out):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_REVIEW, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "accepted"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Review.open(out) as review:  # the dead process's lock is taken over
        order = review.order()
        assert [r.review_state for r in order] == ["unreviewed"] * 3 + ["accepted"] * 3
    assert not list(out.rglob(".*.tmp"))
