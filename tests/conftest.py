"""Shared fixtures: a small untrained SAM 2.1 tiny checkpoint with amplified memory paths (helpers.make_test_checkpoint),
the real photos, and the golden batch (tests/outputs/test_golden.py), shared by the tests that compare with it."""

from __future__ import annotations

import os

# As main.py sets it before torch loads OpenMP: idle OpenMP threads sleep instead of spinning on the cores the
# batch's reading and writing threads need (the tests run the command line in this process: run_main).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import IMAGE_SIZE, REAL_DATA, ROOT, make_inputs, make_test_checkpoint

from labeler.batch.pipeline import label_batch
from labeler.models.sam2.build import build_predictor

# The user's cache folder (feature cache, file hashes) is a fresh one per test session, never ~/.cache;
# subprocesses inherit it. Tests share it, so later batches read features earlier ones stored.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="labeler-test-cache-")


@pytest.fixture(scope="session")
def test_checkpoint(tmp_path_factory) -> Path:
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "sam2.1_test_tiny.pt")


@pytest.fixture(scope="session")
def predictor(test_checkpoint):
    return build_predictor("tiny", checkpoint=test_checkpoint, image_size=IMAGE_SIZE, device="cpu")


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real photos not available: {REAL_DATA} is absent (it sits beside the checkout)")
    return REAL_DATA


@pytest.fixture(scope="session")
def golden_run(test_checkpoint, tmp_path_factory):
    """The deterministic batch through `python main.py --headless`; returns (tmp root, output folder, result).

    float32 explicitly: `--precision auto` is bf16 on CPUs with native bf16, whose bytes differ."""
    root = tmp_path_factory.mktemp("golden")
    prompts_file, targets = make_inputs(root)
    out = root / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--headless", "--quiet", "--prompts", str(prompts_file),
         "--targets", str(targets), "--output", str(out), "--checkpoint", str(test_checkpoint),
         "--image-size", str(IMAGE_SIZE), "--formats", "coco,yolo", "--precision", "fp32"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    return root, out, result


@pytest.fixture(scope="session")
def labeled_folder(test_checkpoint, tmp_path_factory):
    """The demo, labeled once per session (review tests work on copies: `out`)."""
    root = tmp_path_factory.mktemp("review")
    targets = root / "targets"
    targets.mkdir()
    for p in sorted((ROOT / "assets" / "demo" / "targets").iterdir()):
        (targets / p.name).write_bytes(p.read_bytes())
    out = root / "out"
    summary = label_batch(ROOT / "assets" / "demo" / "prompts.json", targets=targets, output=out, checkpoint=test_checkpoint,
                                  image_size=IMAGE_SIZE, formats=("coco", "yolo"), progress=False)
    assert summary.labeled == 6
    return out


@pytest.fixture
def out(labeled_folder, tmp_path):
    """A fresh copy of the labeled folder (its targets folder beside it, as the manifest records)."""
    shutil.copytree(labeled_folder.parent / "targets", tmp_path / "targets")
    shutil.copytree(labeled_folder, tmp_path / "out")
    return tmp_path / "out"
