"""Shared fixtures: a small untrained SAM 2.1 tiny checkpoint with amplified memory paths, test images, and
the golden batch (tests/test_golden.py), shared by the tests that compare with it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labeler.models.sam2.build import build_predictor
from labeler.prompts.prompt_set import ObjectGuides, PromptSet, ReferenceGuides, save_prompts

# The user's cache folder (feature cache, file hashes) is a fresh one per test session, never ~/.cache;
# subprocesses inherit it. Tests share it, so later batches read features earlier ones stored.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="labeler-test-cache-")
IMAGE_SIZE = 256  # small model input keeps the suite fast on 2 CPU cores
ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def make_test_checkpoint(path: Path, image_size: int = IMAGE_SIZE) -> Path:
    """Untrained SAM 2.1 tiny weights whose memory paths are amplified.

    With plain random weights, memories barely change the output, so a test could not tell
    one object's memory from another's. Scaling the memory encoder's last mask-downsampler conv
    and memory attention's cross-attention output, and sharpening that attention (its query and
    key projections), makes objects differ; scaling the object-pointer projections makes the
    pointers and their temporal positions count; a positive bias on the object-score head keeps
    objects visible.
    """
    model = build_predictor("tiny", checkpoint="none", image_size=image_size, device="cpu", seed=1)
    with torch.no_grad():
        model.memory_encoder.mask_downsampler.encoder[-1].weight.mul_(30.0)
        for layer in model.memory_attention.layers:
            layer.cross_attn_image.out_proj.weight.mul_(30.0)
            layer.cross_attn_image.q_proj.weight.mul_(5.0)
            layer.cross_attn_image.k_proj.weight.mul_(5.0)
        model.obj_ptr_proj.layers[-1].weight.mul_(10.0)
        model.obj_ptr_tpos_proj.weight.mul_(30.0)
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(3.0)
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def test_checkpoint(tmp_path_factory) -> Path:
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "sam2.1_test_tiny.pt")


@pytest.fixture(scope="session")
def predictor(test_checkpoint):
    return build_predictor("tiny", checkpoint=test_checkpoint, image_size=IMAGE_SIZE, device="cpu")


def synthetic_image(seed: int, size=(320, 240)) -> np.ndarray:
    """A textured RGB image with a few coloured shapes, different for each seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * (1 + c) + yy * (3 - c) + 40 * c) % 256 for c in range(3)], -1).astype(np.float32)
    img = 0.5 * img + rng.normal(0, 12, img.shape)
    for _ in range(4):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(15, 60)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def save_jpeg(rgb: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)
    return path


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real photos not available: {REAL_DATA} is absent (it sits beside the checkout)")
    return REAL_DATA


def make_inputs(root: Path) -> tuple[Path, Path]:
    """References, prompts.json and targets under `root`; returns (prompts file, target folder)."""
    a = save_jpeg(synthetic_image(11), root / "refs" / "a.jpg")
    b = save_jpeg(synthetic_image(12, size=(288, 224)), root / "refs" / "b.jpg")
    paint = np.zeros((224, 288), dtype=bool)
    paint[60:140, 90:200] = True
    erase = np.zeros((224, 288), dtype=bool)
    erase[90:110, 120:150] = True
    blob = np.zeros((224, 288), dtype=bool)
    blob[20:70, 20:80] = True
    prompts = PromptSet([
        ReferenceGuides(a, 320, 240, [
            ObjectGuides(1, box=(40, 30, 180, 150)),
            ObjectGuides(2, points=[(250, 60), (200, 200)], labels=[1, 0]),
        ]),
        ReferenceGuides(b, 288, 224, [
            ObjectGuides(2, paint=blob),
            ObjectGuides(3, box=(80, 50, 220, 160), paint=paint, erase=erase),
        ]),
    ], classes={1: "disc", 3: "dent"})
    prompts_file = root / "prompts.json"
    save_prompts(prompts, prompts_file)
    targets = root / "targets"
    for seed, size in zip(range(20, 25), [(320, 240), (256, 192), (400, 300), (320, 240), (256, 192)]):
        save_jpeg(synthetic_image(seed, size=size), targets / f"t{seed}.jpg")
    save_jpeg(synthetic_image(30), targets / "same.jpg")
    Image.fromarray(synthetic_image(31, size=(256, 192))).save(targets / "same.png")
    (targets / "broken.jpg").write_bytes(b"not an image")
    return prompts_file, targets


@pytest.fixture(scope="session")
def golden_run(test_checkpoint, tmp_path_factory):
    """The deterministic batch through `python main.py --headless`; returns (tmp root, output folder, result)."""
    root = tmp_path_factory.mktemp("golden")
    prompts_file, targets = make_inputs(root)
    out = root / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--headless", "--quiet", "--prompts", str(prompts_file),
         "--targets", str(targets), "--output", str(out), "--checkpoint", str(test_checkpoint),
         "--image-size", str(IMAGE_SIZE), "--formats", "coco,yolo"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    return root, out, result
