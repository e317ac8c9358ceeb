"""The whole labeler on SAM 3 (the test architecture at 112 px, float32): a batch through `label_batch`, a
feature-cache hit, what a Ray worker builds (`LabelerSpec`, in process: a Ray instance costs more than this
suite's share), the selector's preview, bf16, the output folder byte for byte (golden_output_folder.json), and
torch's global state unchanged by importing, building and running SAM 3."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, check_outputs, files_of, make_inputs
from sam3_helpers import TEST_MODEL

from labeler import label_batch
from labeler.models.backend import ModelSettings
from labeler.models.sam3 import internals
from labeler.models.sam3.backend import Sam3Backend
from labeler.prompts.prompt_set import load_prompts
from labeler.types.guides import ObjectGuides
from labeler.utils.images import read_rgb

GOLDEN = Path(__file__).with_name("golden_output_folder.json")
RUN_SIZE = 112  # the batch's model input (the test checkpoint loads at any multiple of 14): 8 x 8 patches
KEEP = ("t20.jpg", "t22.jpg", "same.png", "broken.jpg")  # three sizes, a stem shared with same.jpg's, an unreadable one


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam3run")
    prompts_file, targets = make_inputs(root)
    for p in targets.iterdir():
        if p.name not in KEEP:
            p.unlink()
    return root, prompts_file, targets


def _run(inputs, sam3_checkpoint, out, **kw):
    root, prompts_file, targets = inputs
    return label_batch(prompts_file, targets, root / out, model=TEST_MODEL, checkpoint=sam3_checkpoint,
                       image_size=RUN_SIZE, precision="fp32", progress=False, formats=("coco",), **kw)


@pytest.fixture(scope="module")
def first_run(inputs, sam3_checkpoint, monkeypatch_module):
    forwards = []
    forward = Sam3Backend.forward
    monkeypatch_module.setattr(Sam3Backend, "forward", lambda self, x: forwards.append(len(x)) or forward(self, x))
    summary = _run(inputs, sam3_checkpoint, "out", cache=inputs[0] / "cache")
    encoded = sum(forwards)
    forwards.clear()
    again = _run(inputs, sam3_checkpoint, "again", cache=inputs[0] / "cache")
    return summary, encoded, again, sum(forwards)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_a_batch_on_sam3_labels_every_readable_target(first_run, inputs):
    summary, encoded, _, _ = first_run
    root, _, targets = inputs
    assert (summary.labeled, summary.failed) == (3, 1)
    assert encoded == 2 + 3  # the references, then each target
    readable = sorted(p for p in targets.iterdir() if p.name != "broken.jpg")
    rows = check_outputs(root / "out", readable, [1, 2, 3])
    assert {r["status"] for r in rows if r["image"] != "broken.jpg"} <= {"present", "absent"}
    settings = json.loads((root / "out" / "manifest.json").read_text())["settings"]
    assert (settings["model"], settings["image_size"], settings["precision"]) == (TEST_MODEL, RUN_SIZE, "fp32")


def test_a_rerun_reads_every_image_from_the_feature_cache_with_the_same_bytes(first_run, inputs):
    _, _, again, encoded_again = first_run
    root = inputs[0]
    assert again.labeled == 3 and encoded_again == 0
    assert files_of(root / "again") == files_of(root / "out")


def _digest(out: Path, tmp: Path) -> dict[str, str]:
    """relative path -> SHA-256, as tests/outputs/test_golden.py hashes (manifest.json out, the folder as <tmp>)."""
    digest = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel == "manifest.json":
            continue
        data = path.read_bytes()
        if path.suffix in {".json", ".csv", ".txt", ".yaml"}:
            for t in {str(tmp.resolve()), str(tmp)}:
                data = data.replace(t.encode(), b"<tmp>")
        digest[rel] = hashlib.sha256(data).hexdigest()
    return digest


def test_the_output_folder_is_byte_identical_to_the_recorded_one(first_run, inputs):
    """Re-record (in a commit that says why) with LABELER_RECORD_GOLDEN=1; a recording run fails on purpose."""
    digest = _digest(inputs[0] / "out", inputs[0])
    if os.environ.get("LABELER_RECORD_GOLDEN"):
        GOLDEN.write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
        pytest.fail(f"recorded {len(digest)} hashes into {GOLDEN}; rerun without LABELER_RECORD_GOLDEN", pytrace=False)
    expected = json.loads(GOLDEN.read_text())
    assert sorted(digest) == sorted(expected), "files added or missing"
    assert [k for k in expected if digest[k] != expected[k]] == [], "files whose bytes changed"


def test_what_a_ray_worker_builds_labels_as_the_local_batch(first_run, inputs, sam3_checkpoint):
    """`LabelerSpec` (the Ray executor's model factory) with `Sam3Backend` gives the local batch's masks."""
    from labeler.batch.ray_executor import LabelerSpec
    from labeler.batch.settings import RunSettings

    root, prompts_file, targets = inputs
    settings = RunSettings(ModelSettings(TEST_MODEL, str(Path(sam3_checkpoint).absolute()), RUN_SIZE, "cpu", "fp32"),
                           cache=False)
    labeler, prepare = LabelerSpec(load_prompts(prompts_file), settings, Sam3Backend)()
    rgb = read_rgb(targets / "t22.jpg")
    (detections,) = labeler.label_many([rgb], inputs=[prepare(rgb)])
    for d in detections:
        written = root / "out" / "id_masks" / f"t22_id{d.id}.png"
        if d.present:
            from PIL import Image

            np.testing.assert_array_equal(np.asarray(Image.open(written)) == 255, d.mask)
        else:
            assert not written.exists()


def test_preview_bf16_and_torch_global_state(sam3_backend, inputs):
    """Building and running SAM 3 (the preview, a labeler under bf16 autocast) leaves torch's global switches as
    they were, even where they are not torch's defaults (SAM 3 sets the SDPA back ends and enters an autocast)."""
    targets = inputs[2]
    flash = torch.backends.cuda.flash_sdp_enabled()
    torch.backends.cuda.enable_flash_sdp(False)
    torch.set_autocast_enabled("cuda", True)
    try:
        before = internals.global_state()
        from labeler.models.sam3.build import TEST_ARCHITECTURE, build_tracker

        small = build_tracker("none", RUN_SIZE, "cpu", architecture=TEST_ARCHITECTURE)
        rgb = read_rgb(targets / "t20.jpg")
        mask = sam3_backend.preview(rgb).mask(ObjectGuides(1, box=(40, 30, 180, 150)))
        assert mask.shape == rgb.shape[:2] and mask.any()
        # bf16 autocast (emulated, so slow, on CPUs without native bf16): the preview at the small size
        bf16 = Sam3Backend(ModelSettings(TEST_MODEL, checkpoint="none", image_size=RUN_SIZE, precision="bf16"),
                           predictor=small)
        assert bf16.precision == "bf16"
        shown = bf16.preview(rgb).mask(ObjectGuides(1, points=[(100, 80)], labels=[1]))
        assert shown.shape == rgb.shape[:2]
        assert internals.global_state() == before
    finally:
        torch.backends.cuda.enable_flash_sdp(flash)
        torch.set_autocast_enabled("cuda", False)


IMPORT_CHECK = r"""
import logging
import torch


def state():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision(),
            torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled(),
            torch.backends.cuda.mem_efficient_sdp_enabled(), torch.is_autocast_enabled("cuda"),
            torch.is_autocast_enabled("cpu"), torch.get_default_dtype(), torch.get_num_threads(),
            list(logging.root.handlers))


torch.backends.cudnn.allow_tf32 = False  # not torch's default: sam3 sets it where CUDA is
torch.backends.cuda.enable_flash_sdp(False)
torch.set_autocast_enabled("cuda", True)
before = state()
import labeler.models.sam3.internals
import sam3.model_builder
after = state()
print("SAME" if after == before else f"CHANGED {before} -> {after}")
"""


def test_importing_sam3_leaves_torch_global_state_alone():
    """In a fresh process (sam3 is imported once per process): TF32, SDPA, autocast switches and the root logger."""
    result = subprocess.run([sys.executable, "-c", IMPORT_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "SAME"
