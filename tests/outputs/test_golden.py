"""The output folder, byte for byte: a deterministic batch against the SHA-256 of every file it writes.

Recorded before the library refactor (issue 11) and kept as the guard of every later change: a change
that alters an output file must say so here, by re-recording (`LABELER_RECORD_GOLDEN=1 python -m
pytest tests/outputs/test_golden.py`) in a commit that names the change. A recording run fails on purpose
(it has nothing to compare with); rerun without the variable to check the recorded hashes.

Float32 (`--precision fp32`: auto is bf16 on CPUs with native bf16, whose bytes differ).
Test checkpoint, image size 256, images `conftest.make_inputs` makes (its `golden_run` is shared with test_api): two references (a box, points with a
negative one, paint, paint and erase), three objects, six targets of three sizes (two sharing a
stem), one unreadable target, COCO and YOLO exports. Text files are hashed with the test's
temporary folder written as `<tmp>` (prompts.json and data.yaml name it). manifest.json is left
out of the bytes: it records file times and absolute paths of that folder; results.csv, rendered
from it, is hashed, and its per-target statuses and stems are checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import IMAGE_SIZE, ROOT

EXPECTED = Path(__file__).with_name("golden") / "output_folder.json"
TEXT_SUFFIXES = {".json", ".csv", ".txt", ".yaml"}


def folder_digest(out: Path, tmp: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under `out` but manifest.json (see the module docstring)."""
    digest = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel == "manifest.json":
            continue
        data = path.read_bytes()
        if path.suffix in TEXT_SUFFIXES:
            for t in {str(tmp.resolve()), str(tmp)}:
                data = data.replace(t.encode(), b"<tmp>")
        digest[rel] = hashlib.sha256(data).hexdigest()
    return digest


def test_output_folder_is_byte_identical_to_the_recorded_one(golden_run):
    root, out, result = golden_run
    assert result.returncode == 1, result.stderr  # broken.jpg is recorded as failed
    digest = folder_digest(out, root)
    if os.environ.get("LABELER_RECORD_GOLDEN"):
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
        # Comparing the folder with what was just written from it would check nothing: a recording run never passes.
        pytest.fail(f"recorded {len(digest)} hashes into {EXPECTED}; rerun without LABELER_RECORD_GOLDEN to check",
                    pytrace=False)
    expected = json.loads(EXPECTED.read_text())
    assert sorted(digest) == sorted(expected), "files added or missing"
    changed = [name for name in expected if digest[name] != expected[name]]
    assert not changed, f"files whose bytes changed: {changed}"



def test_a_recording_run_writes_the_hashes_and_fails(golden_run, tmp_path, monkeypatch):
    """LABELER_RECORD_GOLDEN records and then fails, never a pass (here into a temporary file, not the golden one)."""
    recorded = tmp_path / "golden" / "output_folder.json"
    monkeypatch.setattr(sys.modules[__name__], "EXPECTED", recorded)
    monkeypatch.setenv("LABELER_RECORD_GOLDEN", "1")
    with pytest.raises(pytest.fail.Exception, match=r"recorded \d+ hashes into .*rerun without LABELER_RECORD_GOLDEN"):
        test_output_folder_is_byte_identical_to_the_recorded_one(golden_run)
    root, out, _ = golden_run
    assert json.loads(recorded.read_text()) == folder_digest(out, root)

def test_manifest_records_every_target(golden_run):
    _, out, _ = golden_run
    targets = json.loads((out / "manifest.json").read_text())["targets"]
    status = {name: (entry["status"], entry["stem"]) for name, entry in targets.items()}
    assert status == {
        "broken.jpg": ("failed", "broken"), "same.jpg": ("labeled", "same_jpg"), "same.png": ("labeled", "same_png"),
        **{f"t{s}.jpg": ("labeled", f"t{s}") for s in range(20, 25)},
    }


def test_a_version_1_manifest_is_read_and_resumed(golden_run, test_checkpoint, tmp_path):
    """A folder written before the manifest held typed records: its targets are not labeled again."""
    import csv
    import shutil

    root, out, _ = golden_run
    old = tmp_path / "out"
    shutil.copytree(out, old)
    manifest = json.loads((old / "manifest.json").read_text())
    rows = list(csv.DictReader((old / "results.csv").read_text().splitlines()))
    v1 = {name: {"fingerprint": e["fingerprint"], "file": e["file"], "stem": e["stem"], "status": e["status"],
                 "rows": [r for r in rows if r["image"] == name]} for name, e in manifest["targets"].items()}
    (old / "manifest.json").write_text(json.dumps({"version": 1, "targets": v1}))
    before = {p: p.read_bytes() for p in old.rglob("*.png") if p.name != "report.png"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--headless", "--quiet", "--prompts", str(root / "prompts.json"),
         "--targets", str(root / "targets"), "--output", str(old), "--checkpoint", str(test_checkpoint),
         "--image-size", str(IMAGE_SIZE), "--formats", "coco,yolo", "--precision", "fp32"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert "8 targets: 0 labeled, 7 already labeled, 1 failed" in result.stderr, result.stderr
    assert json.loads((old / "manifest.json").read_text())["version"] == 2
    assert all(p.read_bytes() == data for p, data in before.items())
    again = list(csv.DictReader((old / "results.csv").read_text().splitlines()))
    for a, b in zip(rows, again, strict=True):  # v1 kept logits to 4 decimals: a score may move by 1e-4
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
        assert a["score"] == b["score"] or abs(float(a["score"]) - float(b["score"])) <= 1.0001e-4
