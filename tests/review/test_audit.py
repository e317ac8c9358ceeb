"""The audit on an output folder: the seeded sample in the manifest, what a review records, quality.json,
a killed audit resuming, bad input named, the teach suggestion on real photos."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, as_backend
from PIL import Image

from labeler.cli import main
from labeler.outputs.folder import Manifest, ObjectRecord, TargetRecord
from labeler.outputs.report import sheet_size, write_report
from labeler.prompts.prompt_set import ObjectGuides, PromptSet, ReferenceGuides
from labeler.review.audit import teach_suggestion
from labeler.review.quality import mask_iou, wilson_interval
from labeler.review.session import Review


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def quality(out: Path, caplog, *extra) -> tuple[int, str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="labeler"):
        code = main(["quality", "--output", str(out), *extra], config_path=Path("no-config.py"))
    return code, caplog.text


def test_an_audit_is_seeded_excludes_reviewed_targets_and_resumes(out):
    with Review.open(out) as review:
        worst = review.order()[0].name
        review.accept(worst)                                      # a worst-first review, before the audit
        pool = [r.name for r in review.records() if r.name != worst]
        sample = [r.name for r in review.audit(3, seed=7)]
        assert sample == [pool[i] for i in np.random.default_rng(7).permutation(len(pool))[:3]]
        assert worst not in sample and len(set(sample)) == 3
        (audit,) = manifest_of(out)["audits"]                     # saved before anything is shown
        assert (audit["seed"], audit["size"], audit["pool"], audit["sample"]) == (7, 3, 5, sample)
        review.accept(sample[0])
        assert [r.name for r in review.audit(3)] == sample        # unfinished: the same audit, whatever is asked
        assert [r.name for r in review.audit(5, seed=1)] == sample
        for name in sample[1:]:
            review.accept(name)
        second = [r.name for r in review.audit(10, seed=7)]       # a new audit: only the 2 targets not reviewed
        assert sorted(second) == sorted(set(pool) - set(sample))
    assert len(manifest_of(out)["audits"]) == 2


def test_synthetic_reviews_give_exactly_the_reported_figures(out, caplog):
    with Review.open(out) as review:
        sample = [r.name for r in review.audit(4, seed=0)]
        rest = [r.name for r in review.records() if r.name not in sample]
        a, b, c, d = sample
        review.accept(a)
        pred_b = {x.id: x.mask for x in review.detections(review.record(b))}
        half = pred_b[1].copy()
        half[: half.shape[0] // 2] = False                        # ID 1: the top half erased
        review.correct(b, {1: half})                              # ID 2 as predicted
        pred_c = {x.id: x.mask for x in review.detections(review.record(c))}
        review.correct(c, {2: np.zeros_like(pred_c[2])})          # ID 2: a false positive erased
        review.exclude(d)
        pred_w = review.detections(review.record(rest[0]))[0].mask
        review.correct(rest[0], {1: np.zeros_like(pred_w)})       # a worst-first fix: not in the estimate
    iou_b = mask_iou(pred_b[1], half)
    assert 0 < iou_b < 1
    entries = manifest_of(out)["targets"]
    assert entries[b]["review"]["quality"]["1"]["iou"] == pytest.approx(iou_b)
    assert entries[b]["review"]["quality"]["2"]["iou"] == 1.0 and entries[b]["review"]["threshold"] == 0.0
    assert {k: v["iou"] for k, v in entries[a]["review"]["quality"].items()} == {"1": 1.0, "2": 1.0}
    q = entries[c]["review"]["quality"]["2"]
    assert (q["iou"], q["predicted"], q["final"]) == (0.0, True, False)

    code, text = quality(out, caplog, "--no-teach")
    assert code == 0, text
    report = json.loads((out / "quality.json").read_text())
    assert (report["audited"], report["excluded"]) == (3, 1)
    overall = report["overall"]
    assert overall["mean_iou"] == pytest.approx((1 + 1 + iou_b + 1 + 1 + 0) / 6)
    assert (overall["fix_rate"], overall["fix_rate_ci"]) == (2 / 3, pytest.approx(list(wilson_interval(2, 3))))
    assert (overall["false_positives"], overall["false_negatives"]) == (1, 0)
    lo, hi = overall["mean_iou_ci"]
    assert lo <= overall["mean_iou"] <= hi
    assert report["ids"]["1"]["mean_iou"] == pytest.approx((1 + iou_b + 1) / 3) and report["ids"]["1"]["fixed"] == 1
    assert (report["ids"]["2"]["mean_iou"], report["ids"]["2"]["false_positives"]) == (pytest.approx(2 / 3), 1)
    lo, hi = wilson_interval(2, 3)
    assert report["extrapolation"] == {"unreviewed": 1, "need_fix": 1, "need_fix_ci": [int(lo * 1), 1],
                                       "text": "about 1 (0–1) of 1 unreviewed targets would need a fix"}
    assert "about 1 (0–1) of 1 unreviewed targets would need a fix" in text
    t = report["threshold"]["2"]
    assert (t["presence_errors_now"], t["current"]) == (1, 0.0) and t["presence_errors_suggested"] <= 1
    assert set(report["threshold"]) == {"1", "2"}
    total = report["threshold_all_ids"]
    assert (total["command"] is None) == (total["suggested"] == 0.0)
    if total["command"]:
        assert total["command"].endswith(f"--formats coco,yolo --threshold {total['suggested']}")
        assert total["command"] in text
    worst = report["worst_first"]
    assert worst["biased"] and worst["reviewed"] == 1 and worst["overall"]["false_positives"] == 1
    m = report["margin"]
    assert m["more"] > 1 and m["command"].endswith(f"review --audit 1 --output {out}")  # only 1 left to audit
    assert f"audit about {m['more']} more, more than the 1 unreviewed (auditing them all: {m['command']})" in text
    # report.png gains the quality panel; without quality.json it is the plain sheet again.
    assert Image.open(out / "report.png").size[1] > sheet_size(6)[1]
    (out / "quality.json").unlink()
    review = Review(out)
    write_report(out, review.targets, review.prompts.classes, review.prompts.object_ids)  # as the batch does
    assert Image.open(out / "report.png").size == sheet_size(6)


def test_bad_input_gets_one_message_naming_the_file_and_the_field(out, caplog):
    code, text = quality(out, caplog)
    assert code == 2 and "manifest.json: field 'audits' is absent: no audit yet" in text
    with Review.open(out) as review:
        name = review.audit(2, seed=1)[0].name
        review.accept(name)
    data = manifest_of(out)
    data["targets"][name]["review"]["quality"]["1"]["iou"] = "high"
    (out / "manifest.json").write_text(json.dumps(data))
    code, text = quality(out, caplog, "--no-teach")
    assert code == 2 and f"manifest.json: field 'targets['{name}'].review.quality['1'].iou' is 'high'" in text
    (out / "manifest.json").write_text("{not json")
    code, text = quality(out, caplog)
    assert code == 2 and "manifest.json is not JSON (line 1, column 2" in text
    assert "Traceback" not in text


KILLED_AUDIT = """
import sys, time
from labeler.review.session import Review
with Review.open(sys.argv[1]) as review:
    sample = review.audit(4, seed=5)
    for record in sample[:2]:
        review.accept(record.name)
    print(" ".join(r.name for r in sample), flush=True)
    time.sleep(600)
"""


def test_a_killed_audit_resumes_with_the_same_sample_and_nothing_accepted_lost(out):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_AUDIT, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        sample = proc.stdout.readline().split()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(sample) == 4
    with Review.open(out) as review:  # the dead process's lock is taken over
        resumed = review.audit(4)    # no seed given: the recorded audit, not a new draw
        assert [r.name for r in resumed] == sample
        assert [r.review_state for r in resumed] == ["accepted", "accepted", "unreviewed", "unreviewed"]
        assert all(r.review["quality"] for r in resumed[:2])
    assert not list(out.rglob(".*.tmp"))


def test_the_teach_suggestion_picks_the_photos_the_references_do_not_cover(real_data, predictor, tmp_path):
    """References: a frame of the bedroom video. Corrected: another frame and two street/shop photos."""
    targets = tmp_path / "targets"
    targets.mkdir()
    for src in (real_data / "bedroom" / "00048.jpg", real_data / "photos" / "truck.jpg",
                real_data / "photos" / "groceries.jpg"):
        (targets / src.name).symlink_to(src)  # the photos stay where they are
    out = tmp_path / "out"
    out.mkdir()
    PromptSet([ReferenceGuides(real_data / "bedroom" / "00000.jpg", 960, 540,
                               [ObjectGuides(1, box=(300, 0, 500, 400))])]).save(out / "prompts.json")
    manifest = Manifest(out / "manifest.json", settings={"targets": "../targets", "model": "tiny", "image_size": 256})
    for path in sorted(targets.iterdir()):
        review = {"state": "corrected", "time": "2026-12-01T00:00:00+00:00", "ids": [1], "teach": False,
                  "quality": {"1": {"iou": 0.5, "predicted": True, "final": True, "score": 0.9, "logit": 2.0}}}
        manifest.record("f", TargetRecord(path, path.stem, "labeled", [ObjectRecord(1, 2.0, True, 4, (0, 0, 2, 2))],
                                          review=review))
    manifest.save()
    backend = as_backend(predictor, "fp32")
    cache = tmp_path / "features"
    window = teach_suggestion(Review(out), backend, cache, encode_missing=False)  # the window: the cache only
    assert window["target"] is None and "feature cache holds no features" in window["why"]
    first = teach_suggestion(Review(out), backend, cache)
    ranked = [c["target"] for c in first["candidates"]]
    assert set(ranked[:2]) == {"truck.jpg", "groceries.jpg"} and ranked[2] == "00048.jpg"
    assert first["target"] in ("truck.jpg", "groceries.jpg") and first["nearest_reference"] == "00000.jpg"
    assert first["features"] == {"from_cache": 0, "encoded": 4, "cache": True}
    again = teach_suggestion(Review(out), backend, cache, encode_missing=False)  # now from the feature cache
    assert again["features"] == {"from_cache": 4, "encoded": 0, "cache": True}
    assert [c["target"] for c in again["candidates"]] == ranked
