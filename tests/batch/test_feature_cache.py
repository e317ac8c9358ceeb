"""The feature cache: a hit gives the same bytes as a miss without running the image encoder; damaged
entries are recomputed, the cap evicts the least recently used, `cache --clear` empties it, a full
disk turns it off; and the memoised content hasher behind its keys and the output folder's identity."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3

import pytest
import torch
from helpers import IMAGE_SIZE, files_of

import labeler
import labeler.outputs.folder
from labeler.batch import feature_cache
from labeler.batch.feature_cache import FeatureCache, cache_command
from labeler.models.sam2.build import build_predictor
from labeler.utils.hashing import ContentHasher


@pytest.fixture(scope="module")
def counted_predictor(test_checkpoint):
    """A predictor whose image-encoder runs are counted (images encoded, over all calls)."""
    predictor = build_predictor("tiny", checkpoint=test_checkpoint, image_size=IMAGE_SIZE, device="cpu")
    predictor.encoded = 0

    def count(module, args):
        predictor.encoded += args[0].shape[0]

    predictor.image_encoder.register_forward_pre_hook(count)
    return predictor


def run(golden_run, out, predictor, cache, **kw):
    root = golden_run[0]
    predictor.encoded = 0
    # No exports: they are rebuilt from the per-target files and records compared here (YOLO's joining
    # of parts takes seconds on noise masks). float32, as the golden folder.
    summary = labeler.label_batch(root / "prompts.json", targets=root / "targets", output=out,
                                  checkpoint=kw.pop("checkpoint"), image_size=IMAGE_SIZE, progress=False,
                                  predictor=predictor, cache=cache, precision="fp32", **kw)
    return summary, predictor.encoded


@pytest.fixture(scope="module")
def first_run(golden_run, counted_predictor, test_checkpoint, tmp_path_factory):
    """The golden inputs labeled once with an empty cache: (cache folder, output folder, encoder runs)."""
    root = tmp_path_factory.mktemp("first")
    summary, encoded = run(golden_run, root / "out", counted_predictor, root / "cache", checkpoint=test_checkpoint)
    assert (summary.labeled, summary.failed) == (7, 1)
    return root / "cache", root / "out", encoded


def test_a_hit_gives_the_bytes_of_a_miss_and_runs_the_encoder_zero_times(golden_run, first_run, counted_predictor,
                                                                         test_checkpoint, tmp_path, caplog):
    cache, first, encoded = first_run
    assert encoded == 2 + 7  # the references and the readable targets
    assert FeatureCache(cache, 1 << 40, "").usage()[0] == 9
    # The golden folder's files, but the exports (not written here) and the manifest (it names the
    # targets folder relative to the output folder).
    ours = {k: v for k, v in files_of(first).items() if k != "manifest.json"}
    assert ours == {k: v for k, v in files_of(golden_run[1]).items() if k in ours}
    assert len(ours) > 40

    caplog.set_level(logging.INFO, "labeler")
    second, encoded = run(golden_run, tmp_path / "second", counted_predictor, cache, checkpoint=test_checkpoint)
    assert encoded == 0
    assert "9 images read, 0 encoded" in caplog.text
    assert files_of(tmp_path / "second") == files_of(first)

    # A threshold change relabels every target (a new fingerprint) from the cache.
    third, encoded = run(golden_run, tmp_path / "second", counted_predictor, cache, checkpoint=test_checkpoint,
                         threshold=-5.0)
    assert (third.labeled, third.skipped, encoded) == (7, 0, 0)


def test_a_damaged_entry_is_reported_once_recomputed_and_replaced(golden_run, first_run, counted_predictor,
                                                                   test_checkpoint, tmp_path, caplog):
    cache = tmp_path / "cache"
    shutil.copytree(first_run[0], cache)
    entries = sorted(cache.glob("*.feat"))
    truncated, flipped = entries[0], entries[1]
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))

    caplog.set_level(logging.WARNING)
    _, encoded = run(golden_run, tmp_path / "out", counted_predictor, cache, checkpoint=test_checkpoint)
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 2
    assert any("bytes" in m and truncated.name in m for m in damaged)
    assert any("checksum" in m and flipped.name in m for m in damaged)
    assert encoded == 2  # the two damaged images, alone (batch size 1)
    assert files_of(tmp_path / "out") == files_of(first_run[1])
    good = FeatureCache(cache, 1 << 40, "")
    assert all(good.load(p.stem) is not None for p in (truncated, flipped))  # replaced by good entries


def test_the_cap_evicts_the_least_recently_used(tmp_path):
    cache = FeatureCache(tmp_path, max_bytes=1, model_key="m")
    level = torch.arange(4000, dtype=torch.float32).view(1, 1, 40, 100)
    cache.store(cache.key("a"), [level], ["float32"])
    size = cache.usage()[1]
    cache.max_bytes = int(3.5 * size)
    for name in "bc":
        cache.store(cache.key(name), [level + 1], ["float32"])
    os.utime(cache._path(cache.key("a")), ns=(1, 1))  # "a" is the oldest ...
    os.utime(cache._path(cache.key("b")), ns=(2, 2))
    assert cache.load(cache.key("a")) is not None  # ... until it is read: now "b" is
    cache.store(cache.key("d"), [level], ["float32"])
    assert cache.load(cache.key("b")) is None
    for name in "acd":
        assert torch.equal(cache.load(cache.key(name))["levels"][0], level + (name == "c"))
    assert cache.usage()[1] <= cache.max_bytes


def test_a_full_disk_turns_the_cache_off_with_one_warning(golden_run, first_run, counted_predictor, test_checkpoint,
                                                          tmp_path, monkeypatch, caplog):
    # A real full disk needs a mounted small file system (privileges CI may lack): the write fails as one would.
    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(feature_cache, "atomic_write_bytes", full)
    caplog.set_level(logging.WARNING)
    summary, encoded = run(golden_run, tmp_path / "out", counted_predictor, tmp_path / "cache",
                           checkpoint=test_checkpoint)
    assert (summary.labeled, summary.failed, encoded) == (7, 1, 9)
    warnings = [r.getMessage() for r in caplog.records if "feature cache" in r.getMessage()]
    assert len(warnings) == 1 and "the disk is full" in warnings[0], warnings
    assert files_of(tmp_path / "out") == files_of(first_run[1])


def test_cache_command_shows_and_clears(tmp_path, caplog):
    cache = FeatureCache(tmp_path / "c", 1 << 30, "m")
    for name in "ab":
        cache.store(cache.key(name), [torch.zeros(1, 2, 8, 8)], ["float32"])
    caplog.set_level(logging.INFO)
    assert cache_command(["--cache", str(tmp_path / "c")]) == 0
    assert "2 entries" in caplog.text
    assert cache_command(["--cache", str(tmp_path / "c"), "--clear"]) == 0
    assert "deleted 2 entries" in caplog.text
    assert cache.usage() == (0, 0)


def test_the_command_line_cache_options(tmp_path, monkeypatch):
    import subprocess
    import sys

    from helpers import ROOT

    from labeler import cli
    from labeler.batch import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "label_batch", lambda *a, **kw: calls.append(kw) or labeler.BatchSummary(0, 0, 0, 0))
    common = ["--headless", "--prompts", str(ROOT / "assets/demo/prompts.json"), "--checkpoint", "none"]
    assert cli.main([*common, "--cache", str(tmp_path / "c"), "--cache-size", "2.5"], config_path=tmp_path / "x") == 0
    assert cli.main([*common, "--no-cache", "--cache", str(tmp_path / "c")], config_path=tmp_path / "x") == 0
    assert [(kw["cache"], kw["cache_size_gb"]) for kw in calls] == [(str(tmp_path / "c"), 2.5), (False, 20.0)]

    cache = FeatureCache(tmp_path / "c", 1 << 30, "m")
    cache.store(cache.key("a"), [torch.zeros(1, 2, 8, 8)], ["float32"])
    shown = subprocess.run([sys.executable, str(ROOT / "main.py"), "cache", "--cache", str(tmp_path / "c")],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "1 entries" in shown.stderr


def test_the_hasher_remembers_by_path_size_and_time_across_processes(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"first")
    db = tmp_path / "hashes.sqlite"
    first = ContentHasher(db)(image)
    import hashlib

    assert first == hashlib.sha256(b"first").hexdigest()
    # A new hasher (another run) reads it back without reading the file: prove it by changing the
    # remembered digest behind the hasher's back.
    with sqlite3.connect(db) as con:
        con.execute("UPDATE hashes SET sha256 = 'remembered'")
    assert ContentHasher(db)(image) == "remembered"
    image.write_bytes(b"second")  # a new size: hashed again
    assert ContentHasher(db)(image) == hashlib.sha256(b"second").hexdigest()
    unwritable = ContentHasher(tmp_path / "file" / "hashes.sqlite")
    (tmp_path / "file").write_text("a file where the folder should be")
    assert unwritable(image) == hashlib.sha256(b"second").hexdigest()  # remembered in memory only


def test_a_moved_output_folder_and_moved_targets_resume_without_relabeling(golden_run, counted_predictor,
                                                                           test_checkpoint, tmp_path):
    root = golden_run[0]
    moved = tmp_path / "elsewhere"
    shutil.copytree(root / "targets", moved / "targets")  # new paths, new file times
    shutil.copytree(golden_run[1], moved / "out")
    shutil.copy(test_checkpoint, tmp_path / "ckpt.pt")
    before = files_of(moved / "out")
    counted_predictor.encoded = 0
    summary = labeler.label_batch(moved / "out" / "prompts.json", targets=moved / "targets", output=moved / "out",
                                  checkpoint=tmp_path / "ckpt.pt", image_size=IMAGE_SIZE, progress=False,
                                  predictor=counted_predictor, precision="fp32")
    assert (summary.labeled, summary.skipped, summary.failed) == (0, 7, 1)
    # The same files but those that name the new place: yolo/data.yaml (its absolute path, for Ultralytics),
    # the manifest's settings (the checkpoint's path), and results.csv's error for the unreadable file.
    moving = {"yolo/data.yaml", "manifest.json"}
    before["results.csv"] = before["results.csv"].replace(str(root / "targets").encode(), str(moved / "targets").encode())
    after = files_of(moved / "out")
    assert {k: v for k, v in after.items() if k not in moving} == {k: v for k, v in before.items() if k not in moving}


def test_a_folder_identified_by_file_time_is_relabeled_once_and_says_why(golden_run, counted_predictor,
                                                                          test_checkpoint, tmp_path, caplog):
    import json

    out = tmp_path / "out"
    shutil.copytree(golden_run[1], out)
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["targets"].values():
        entry["file"] = "1234:5678"  # size:mtime, as manifests before content hashes had it
    (out / "manifest.json").write_text(json.dumps(manifest))
    caplog.set_level(logging.INFO, "labeler")
    first, _ = run(golden_run, out, counted_predictor, None, checkpoint=test_checkpoint)  # the session's cache
    assert first.labeled == 7 and "identifies targets by file time" in caplog.text
    assert not labeler.outputs.folder.Manifest.load(out / "manifest.json").identified_by_time  # once only
    # Not compared: the manifest (it names the targets' folder) and the copied yolo/data.yaml (its path).
    moving = {"manifest.json", "yolo/data.yaml"}
    same = {k: v for k, v in files_of(golden_run[1]).items() if k not in moving}
    assert {k: v for k, v in files_of(out).items() if k not in moving} == same
