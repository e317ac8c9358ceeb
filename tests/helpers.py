"""What the tests share besides fixtures: the project root, the small model size, test images and inputs,
running `python main.py`, and checks of an output folder (conftest.py holds the fixtures)."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from labeler.models.sam2.build import build_predictor
from labeler.outputs.folder import output_stems
from labeler.prompts.prompt_set import (
    ObjectGuides,
    PromptSet,
    ReferenceGuides,
    save_prompts,
)
from labeler.utils.images import upright_size

IMAGE_SIZE = 256  # small model input keeps the suite fast on 2 CPU cores
ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "real"


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



def run_main(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    """`python main.py --headless --quiet ARGS` from `cwd`, run in this process: the command
    line's own `main` (config.py, parsing, exit codes), what it printed and its log lines (on stderr, as in
    a terminal). In this process, a run saves the interpreter's and torch's start: about 6 s on 2 cores.
    Tests of what needs a process of its own (signals, the environment, imports) start main.py themselves.
    """
    from labeler.cli import main

    argv = ["--headless", "--quiet", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    lines = logging.StreamHandler(err)
    lines.setFormatter(logging.Formatter("%(message)s"))  # main's logging.basicConfig format
    root, level, before = logging.getLogger(), logging.getLogger().level, os.getcwd()
    root.addHandler(lines)
    root.setLevel(logging.INFO)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv, config_path=ROOT / "config.py")
            except SystemExit as e:  # argparse's usage errors: 2
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception:  # as the interpreter reports it: a traceback and 1
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(before)
        root.removeHandler(lines)
        root.setLevel(level)
    return subprocess.CompletedProcess([sys.executable, "main.py", *argv], code, out.getvalue(), err.getvalue())


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def check_outputs(out: Path, targets: list[Path], object_ids: list[int]) -> list[dict]:
    """Every output agrees with every other: files, label map, id masks, boxes and results.csv."""
    rows = list(csv.DictReader(open(out / "results.csv")))
    for target, stem in zip(targets, output_stems(targets)):
        target_rows = [r for r in rows if r["image"] == target.name]
        assert sorted(int(r["id"]) for r in target_rows) == object_ids
        w, h = upright_size(target)
        labels = read_png(out / "labels" / f"{stem}.png")
        assert labels.shape == (h, w)
        colors = read_png(out / "masks" / f"{stem}.png")
        assert colors.shape == (h, w, 3)
        assert Image.open(out / "overlays" / f"{stem}.jpg").size == (w, h)
        boxes = {int(line.split()[0]): tuple(map(int, line.split()[1:]))
                 for line in (out / "bboxes" / f"{stem}.txt").read_text().splitlines()}
        union = np.zeros((h, w), dtype=bool)
        for r in target_rows:
            k = int(r["id"])
            id_mask_path = out / "id_masks" / f"{stem}_id{k}.png"
            if r["status"] == "absent":
                assert not id_mask_path.exists() and k not in boxes and r["area"] == "0"
                assert not (labels == k).any()
                continue
            assert r["status"] == "present"
            mask = read_png(id_mask_path)
            assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
            mask = mask == 255
            union |= mask
            assert int(r["area"]) == mask.sum() > 0
            ys, xs = np.nonzero(mask)
            extent = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert boxes[k] == extent and r["bbox"] == " ".join(map(str, extent))
            assert not (labels == k)[~mask].any(), "label map pixel outside its id mask"
        np.testing.assert_array_equal(labels > 0, union)
        assert set(boxes) == {int(r["id"]) for r in target_rows if r["status"] == "present"}
    return rows


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file's bytes; yolo/data.yaml names its own folder (Ultralytics needs it absolute), read as <out>."""
    own = str(folder.absolute()).encode()
    return {p.relative_to(folder).as_posix(): p.read_bytes().replace(own, b"<out>")
            for p in sorted(folder.rglob("*")) if p.is_file()}


def as_backend(predictor, precision: str = "auto"):
    """A SAM 2 predictor built in a test as the labeler's model backend, at `precision` (auto, bf16, fp32)."""
    from labeler.models.backend import ModelSettings
    from labeler.models.sam2.backend import Sam2Backend

    settings = ModelSettings(checkpoint="none", image_size=predictor.image_size, precision=precision)
    return Sam2Backend(settings, predictor=predictor)
