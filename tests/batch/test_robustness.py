"""Nothing lost, nothing crashes: odd images, broken prompts, bad environments, interruptions and resume."""

from __future__ import annotations

import csv
import json
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import IMAGE_SIZE, ROOT, check_outputs, run_main
from PIL import Image

from labeler.batch.local import run_batch
from labeler.batch.recorder import BatchRecorder
from labeler.types.detections import Detection

DEMO = ROOT / "assets" / "demo"


def _photo(w, h, seed=0):
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), (xx + yy) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def make_bad_corpus(folder: Path) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Every kind of file real folders hold; returns {valid name: upright (w, h)} and the unreadable names."""
    folder.mkdir()
    valid: dict[str, tuple[int, int]] = {}
    img = _photo(64, 48)
    img.save(folder / "whole.jpg")
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    img.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.asarray(img.convert("L")).astype(np.uint16) * 257)).save(folder / "sixteen.png")
    img.convert("L").save(folder / "grey.png")
    img.convert("LA").save(folder / "grey_alpha.png")
    img.convert("RGBA").save(folder / "rgba.png")
    img.convert("P").save(folder / "palette.png")
    for name in ("whole.jpg", "cmyk.jpg", "sixteen.png", "grey.png", "grey_alpha.png", "rgba.png", "palette.png"):
        valid[name] = (64, 48)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(folder / f"exif{orientation}.jpg", exif=exif)
        valid[f"exif{orientation}.jpg"] = (48, 64) if orientation >= 5 else (64, 48)
    _photo(1, 1).save(folder / "one_pixel.png")
    valid["one_pixel.png"] = (1, 1)
    _photo(10000, 9000).save(folder / "huge.jpg", quality=70)  # 90 MP: over PIL's 89.5-MP bomb limit
    valid["huge.jpg"] = (10000, 9000)
    for name in ("café photo.jpg", "日本 画像.png"):
        img.save(folder / name)
        valid[name] = (64, 48)
    img.save(folder / "a.jpg")
    img.save(folder / "a.png")
    valid.update({"a.jpg": (64, 48), "a.png": (64, 48)})
    (folder / "sub").mkdir()
    img.save(folder / "sub" / "inside.jpg")
    img.save(folder / ".hidden.jpg")
    return valid, ["truncated.jpg", "zero.png", "text.jpg"]


def test_every_readable_image_is_labeled_upright_and_the_rest_recorded(test_checkpoint, tmp_path):
    valid, unreadable = make_bad_corpus(tmp_path / "targets")
    out = tmp_path / "out"
    result = run_main("--prompts", DEMO / "prompts.json", "--targets", tmp_path / "targets", "--output", out,
                      "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE)
    assert result.returncode == 1, result.stderr
    rows = list(csv.DictReader(open(out / "results.csv", encoding="utf-8")))
    failed = {r["image"]: r["error"] for r in rows if r["status"] == "failed"}
    assert sorted(failed) == sorted(unreadable)
    assert all("cannot read image" in why for why in failed.values())
    stems = {"a.jpg": "a_jpg", "a.png": "a_png"}
    for name, (w, h) in valid.items():
        stem = stems.get(name, Path(name).stem)
        assert Image.open(out / "labels" / f"{stem}.png").size == (w, h), name
    # Every file of every image but the 90-megapixel one (its label map's size is checked above):
    # decoding its masks and overlay again would take this test half a minute.
    check_outputs(out, sorted((tmp_path / "targets" / n) for n in valid if n != "huge.jpg"), [1, 2])
    for name in unreadable + ["inside.jpg", ".hidden.jpg"]:
        assert not list(out.glob(f"*/{Path(name).stem}*")), name
    assert "3 failed" in result.stderr


BROKEN_PROMPTS = {
    "not JSON": ("{oops", "not valid JSON"),
    "wrong version": ('{"version": 7, "references": []}', "version"),
    "missing field": ('{"version": 1, "references": [{"image": "refs/ref1.jpg", "width": 320, "objects": []}]}', "height"),
    "no guide": ('{"version": 1, "references": [{"image": "refs/ref1.jpg", "width": 320, "height": 240, "objects": [{"id": 1}]}]}', "no guide"),
    "box inverted": ('{"version": 1, "references": [{"image": "refs/ref1.jpg", "width": 320, "height": 240, "objects": [{"id": 1, "box": [50, 10, 20, 40]}]}]}', "box"),
    "NaN point": ('{"version": 1, "references": [{"image": "refs/ref1.jpg", "width": 320, "height": 240, "objects": [{"id": 1, "points": [[NaN, 3]], "labels": [1]}]}]}', "points"),
    "labels length": ('{"version": 1, "references": [{"image": "refs/ref1.jpg", "width": 320, "height": 240, "objects": [{"id": 1, "points": [[3, 3]], "labels": [1, 0]}]}]}', "labels"),
    "missing image": ('{"version": 1, "references": [{"image": "refs/gone.jpg", "width": 320, "height": 240, "objects": [{"id": 1, "box": [1, 1, 50, 50]}]}]}', "gone.jpg"),
    "size differs": ('{"version": 1, "references": [{"image": "refs/ref1.jpg", "width": 640, "height": 240, "objects": [{"id": 1, "box": [1, 1, 50, 50]}]}]}', "width"),
    "duplicate id": ('{"version": 1, "references": [{"image": "refs/ref1.jpg", "width": 320, "height": 240, "objects": [{"id": 1, "box": [1, 1, 50, 50]}, {"id": 1, "box": [1, 1, 50, 50]}]}]}', "id"),
    "id 256": ('{"version": 1, "references": [{"image": "refs/ref1.jpg", "width": 320, "height": 240, "objects": [{"id": 256, "box": [1, 1, 50, 50]}]}]}', "id"),
}


@pytest.mark.parametrize("case", list(BROKEN_PROMPTS))
def test_broken_prompts_stop_with_one_message_and_nothing_written(tmp_path, case):
    text, field = BROKEN_PROMPTS[case]
    (tmp_path / "refs").symlink_to(DEMO / "refs")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(text)
    out = tmp_path / "out"
    result = run_main("--prompts", prompts, "--targets", DEMO / "targets", "--output", out, "--checkpoint", "none")
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: ") and str(prompts) in message
    assert field in message
    if case not in ("not JSON", "wrong version"):
        assert "reference 1" in message
    assert not out.exists()


def test_unwritable_output_is_refused_before_the_batch(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    result = run_main("--prompts", DEMO / "prompts.json", "--targets", DEMO / "targets",
                      "--output", blocker / "out", "--checkpoint", "none")
    assert result.returncode == 2 and "can't be written" in result.stderr


def test_output_inside_the_target_folder_is_not_labeled(test_checkpoint, tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    for p in sorted((DEMO / "targets").iterdir())[:2]:
        (targets / p.name).symlink_to(p)
    for _ in range(2):
        result = run_main("--prompts", DEMO / "prompts.json", "--targets", targets, "--output", targets / "out",
                          "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE, "--force")
        assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(targets / "out" / "results.csv")))
    assert {r["image"] for r in rows} == {"target01.jpg", "target02.jpg"}


class _FlakyLabeler:
    """A stand-in for the GPU labeler: runs out of memory on chosen targets (the CPU never does)."""

    memory, object_ids = "refs", [1]

    def __init__(self, failures: dict[int, int]):
        self.failures, self.calls = failures, 0

    def label_many(self, rgbs):
        return [self.label(rgb) for rgb in rgbs]

    def label(self, rgb):
        self.calls += 1
        size = rgb.shape[1]
        if self.failures.get(size, 0) > 0:
            self.failures[size] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory (stand-in)")
        mask = np.zeros(rgb.shape[:2], bool)
        mask[:2, :2] = True
        return [Detection(1, 1.0, mask, True)]


def test_out_of_gpu_memory_retries_once_then_records_the_target(tmp_path):
    targets = []
    for w in (30, 31, 32):
        targets.append(tmp_path / f"t{w}.png")
        _photo(w, 20).save(targets[-1])
    labeler = _FlakyLabeler({31: 1, 32: 2})       # 31: fails once, 32: fails twice
    summary = run_batch(labeler, BatchRecorder(tmp_path / "out", targets, {}, "fp", progress=False))
    assert (summary.labeled, summary.failed) == (2, 1)
    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "out" / "results.csv"))}
    assert rows["t31.png"]["status"] == "present"
    assert rows["t32.png"]["status"] == "failed" and "out of GPU memory" in rows["t32.png"]["error"]
    assert not (tmp_path / "out" / "labels" / "t32.png").exists()


def _targets(tmp_path: Path, copies: int) -> Path:
    folder = tmp_path / "targets"
    folder.mkdir()
    for k in range(copies):
        for p in sorted((DEMO / "targets").iterdir()):
            (folder / f"{k:02d}_{p.name}").symlink_to(p)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_skips_what_is_labeled_and_relabels_what_changed(test_checkpoint, tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    for p in sorted((DEMO / "targets").iterdir()):
        (targets / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    args = ["--prompts", DEMO / "prompts.json", "--targets", targets, "--output", out,
            "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE]
    assert run_main(*args).returncode == 0
    first = _files(out)
    again = run_main(*args)
    assert "6 targets: 0 labeled, 6 already labeled" in again.stderr
    assert _files(out) == first
    Image.open(targets / "target03.jpg").transpose(Image.FLIP_LEFT_RIGHT).save(targets / "target03.jpg")
    assert "6 targets: 1 labeled, 5 already labeled" in run_main(*args).stderr
    assert "6 targets: 6 labeled, 0 already labeled" in run_main(*args, "--threshold", "0.5").stderr
    assert "6 targets: 6 labeled, 0 already labeled" in run_main(*args, "--threshold", "0.5", "--force").stderr
    chain = run_main(*args, "--threshold", "0.5", "--memory", "chain")
    assert "6 targets: 6 labeled" in chain.stderr
    (out / "manifest.json").write_text("{broken")
    assert "can't be read" in run_main(*args).stderr


def _wait_for_labels(out: Path, proc: subprocess.Popen, count: int) -> None:
    deadline = time.monotonic() + 120
    while len(list((out / "labels").glob("*.png"))) < count if (out / "labels").exists() else True:
        assert proc.poll() is None, "the batch ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(test_checkpoint, tmp_path_factory):
    """24 targets labeled in one go: (the command's arguments, the output folder's files)."""
    root = tmp_path_factory.mktemp("whole")
    args = ["--prompts", DEMO / "prompts.json", "--targets", _targets(root, 4),  # 24 targets
            "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE, "--quiet"]
    assert run_main(*args, "--output", root / "whole").returncode == 0
    return root, args, _files(root / "whole")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_interrupted_batch_resumes_to_the_same_outputs(uninterrupted, how):
    root, args, whole = uninterrupted

    out = root / f"out-{how.name}"  # beside "whole": the manifest names the targets folder relative to it
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--headless", *map(str, args), "--output", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_labels(out, proc, 8)
    while how == signal.SIGKILL and not (out / "manifest.json").exists():  # a periodic save has happened
        assert proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=120)
    if how != signal.SIGKILL:
        assert proc.returncode == 128 + how, stderr
        assert "run the same command again" in stderr
        rows = list(csv.DictReader(open(out / "results.csv")))
        manifest = json.loads((out / "manifest.json").read_text())["targets"]
        assert 8 <= len(manifest) < 24 and len(rows) == 2 * len(manifest)
        assert {r["image"] for r in rows} == set(manifest)
    assert not list(out.rglob(".*.tmp")) or how == signal.SIGKILL

    resumed = run_main(*args, "--output", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "already labeled" in resumed.stderr and " 0 already labeled" not in resumed.stderr
    assert _files(out) == whole


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim and /proc: Linux with glibc only")
def test_freed_heap_goes_back_to_the_os():
    # Fragments the heap the way a long batch does: blocks below glibc's mmap threshold, most freed,
    # every eighth kept. Freed blocks between kept ones stay resident until release_free_heap.
    script = """
import numpy as np
from labeler.batch.local import release_free_heap
def rss_mib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
blocks = [np.ones(8192) for _ in range(4000)]  # 64 KiB each, 250 MiB in all
kept = blocks[::8]
del blocks
before = rss_mib()
release_free_heap()
print(before, rss_mib())
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    assert before - after > 150, (before, after)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and mallinfo2: glibc only")
def test_a_batch_keeps_large_activations_in_the_heap():
    # A 40 MiB block (an activation at 1024 px is 12-100 MiB) would get its own mmap under glibc's
    # default threshold; after steady_heap it comes from the heap, where its place is the same each time.
    script = """
import ctypes, numpy as np
from labeler.batch.local import steady_heap
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
def mmapped_mib():
    return libc.mallinfo2().hblkhd / 2**20
block = np.ones(40 << 20, np.uint8)
default = mmapped_mib()
del block
steady_heap()
block = np.ones(40 << 20, np.uint8)
print(default, mmapped_mib())
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    default, steady = map(float, out.stdout.split())
    assert default >= 40 and steady < 40, (default, steady)
