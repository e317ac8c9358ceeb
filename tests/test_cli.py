"""`python main.py --headless` end to end: real photos, the bundled demo, and the ways a run is refused."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from helpers import IMAGE_SIZE, ROOT, check_outputs, run_main

from labeler.prompts.prompt_set import (
    ObjectGuides,
    PromptSet,
    ReferenceGuides,
    load_prompts,
    save_prompts,
)


@pytest.fixture
def real_run(real_data, tmp_path):
    """Guides from SAM 2's own examples on a bedroom frame and the truck; targets are all real photos."""
    bedroom, truck = real_data / "bedroom" / "00000.jpg", real_data / "photos" / "truck.jpg"
    paint = np.zeros((540, 960), dtype=bool)
    paint[280:330, 170:230] = True
    prompts = PromptSet([
        ReferenceGuides(bedroom, 960, 540, [
            ObjectGuides(1, points=[(210, 350), (250, 220)], labels=[1, 1]),
            ObjectGuides(2, box=(300, 0, 500, 400)),
            ObjectGuides(3, points=[(200, 300)], labels=[1], paint=paint),
            ObjectGuides(4, points=[(400, 150), (100, 500)], labels=[1, 0]),
        ]),
        ReferenceGuides(truck, 1800, 1200, [
            ObjectGuides(1, points=[(500, 375)], labels=[1]),
            ObjectGuides(5, box=(425, 600, 700, 875)),
        ]),
    ], classes={1: "child", 5: "wheel"})
    prompts_file = tmp_path / "prompts.json"
    save_prompts(prompts, prompts_file)
    targets_dir = tmp_path / "targets"
    targets_dir.mkdir()
    for p in sorted((real_data / "bedroom").glob("*.jpg")) + sorted((real_data / "photos").glob("*.jpg")):
        (targets_dir / p.name).symlink_to(p)
    return prompts, prompts_file, targets_dir


def test_headless_labels_the_real_photos(real_run, test_checkpoint, tmp_path):
    prompts, prompts_file, targets_dir = real_run
    out = tmp_path / "out"
    result = run_main("--prompts", prompts_file, "--targets", targets_dir, "--output", out,
                      "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE)
    assert result.returncode == 0, result.stderr
    targets = sorted(targets_dir.iterdir())
    rows = check_outputs(out, targets, [1, 2, 3, 4, 5])
    assert any(r["status"] == "present" for r in rows)
    assert {r["class"] for r in rows} == {"child", "object_2", "object_3", "object_4", "wheel"}
    assert load_prompts(out / "prompts.json") == prompts  # the batch records what it was conditioned on
    assert "26 targets: 26 labeled, 0 already labeled, 0 failed" in result.stderr


def test_headless_chain_mode_on_a_frame_sequence(real_run, test_checkpoint, tmp_path):
    _, prompts_file, _ = real_run
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted((prompts_file.parent / "targets").iterdir())[:6]:
        (frames / p.name).symlink_to(p.resolve())
    out = tmp_path / "out"
    result = run_main("--prompts", prompts_file, "--targets", frames, "--output", out, "--memory", "chain",
                      "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE)
    assert result.returncode == 0, result.stderr
    check_outputs(out, sorted(frames.iterdir()), [1, 2, 3, 4, 5])


def test_bundled_demo_runs_with_untrained_weights(tmp_path):
    out = tmp_path / "out"
    result = run_main("--prompts", "assets/demo/prompts.json", "--targets", "assets/demo/targets",
                      "--output", out, "--checkpoint", "none", "--image-size", IMAGE_SIZE)
    assert result.returncode == 0, result.stderr
    assert "UNTRAINED SAM 2 WEIGHTS" in result.stderr
    check_outputs(out, sorted((ROOT / "assets/demo/targets").iterdir()), [1, 2])


def test_unreadable_target_is_recorded_and_the_batch_goes_on(test_checkpoint, tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    for p in sorted((ROOT / "assets/demo/targets").iterdir())[:2]:
        (targets / p.name).symlink_to(p)
    (targets / "broken.jpg").write_text("not an image")
    (targets / "a.png").symlink_to(ROOT / "assets/demo/targets/target03.jpg")
    (targets / "a.jpg").symlink_to(ROOT / "assets/demo/targets/target04.jpg")
    out = tmp_path / "out"
    result = run_main("--prompts", "assets/demo/prompts.json", "--targets", targets, "--output", out,
                      "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE)
    assert result.returncode == 1
    rows = list(csv.DictReader(open(out / "results.csv")))
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["image"] for r in failed] == ["broken.jpg"] and "cannot read image" in failed[0]["error"]
    assert not list(out.glob("*/broken*"))
    good = [p for p in sorted(targets.iterdir()) if p.name != "broken.jpg"]
    check_outputs(out, good, [1, 2])
    assert (out / "labels" / "a_png.png").exists() and (out / "labels" / "a_jpg.png").exists()
    assert "1 failed" in result.stderr


def test_invalid_prompts_stop_before_anything_is_written(tmp_path):
    bad = tmp_path / "prompts.json"
    bad.write_text('{"version": 1, "references": [{"image": "x.jpg", "width": 10, "height": 10, "objects": []}]}')
    out = tmp_path / "out"
    result = run_main("--prompts", bad, "--targets", "assets/demo/targets", "--output", out, "--checkpoint", "none")
    assert result.returncode == 2
    assert str(bad) in result.stderr and "reference 1" in result.stderr
    assert not out.exists()


def test_missing_checkpoint_names_the_download_command(tmp_path):
    out = tmp_path / "out"
    result = run_main("--prompts", ROOT / "assets/demo/prompts.json", "--targets", ROOT / "assets/demo/targets",
                      "--output", out, "--model", "small", cwd=tmp_path)
    assert result.returncode == 2
    assert "checkpoints/sam2.1_hiera_small.pt" in result.stderr
    assert "python main.py download --model small" in result.stderr
    assert not out.exists()


def test_missing_prompts_file_says_how_to_make_one(tmp_path):
    result = run_main("--output", tmp_path / "out", "--targets", "assets/demo/targets", "--checkpoint", "none")
    assert result.returncode == 2 and "no prompts file" in result.stderr


def test_headless_never_imports_a_gui_backend(tmp_path):
    # report.png is drawn on matplotlib's Agg canvas (matplotlib.backends.backend_agg): a headless
    # raster backend that needs no display and loads no GUI toolkit, so it is the one backend allowed.
    code = (
        "import sys; from labeler.cli import main; "
        f"rc = main(['--headless', '--quiet', '--prompts', 'assets/demo/prompts.json', '--targets', "
        f"'assets/demo/targets', '--output', {str(tmp_path / 'out')!r}, '--checkpoint', 'none', '--image-size', '128']); "
        "gui = [m for m in sys.modules if m in ('matplotlib.pyplot', 'tkinter', 'PyQt5', 'PySide6') "
        "or (m.startswith('matplotlib.backends.backend_') and m != 'matplotlib.backends.backend_agg')]; "
        "print('RC', rc, 'GUI', gui)"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "DISPLAY"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert "RC 0 GUI []" in result.stdout, result.stdout + result.stderr


def test_selector_without_a_display_points_to_headless(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--refs", "assets/demo/refs", "--targets", "assets/demo/targets",
         "--output", str(tmp_path / "out"), "--checkpoint", "none"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2
    assert "needs a display" in result.stderr and "--headless" in result.stderr


def test_batch_size_runs_several_targets_per_forward(test_checkpoint, tmp_path):
    out = tmp_path / "out"
    result = run_main("--prompts", "assets/demo/prompts.json", "--targets", "assets/demo/targets", "--output", out,
                      "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE, "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    check_outputs(out, sorted((ROOT / "assets/demo/targets").iterdir()), [1, 2])
