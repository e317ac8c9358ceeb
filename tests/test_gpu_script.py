"""benchmarks/gpu/run.sh, the GPU lease's one call, end to end on the CPU at tiny sizes: the wheel step (skipped
here, where the packages are importable), the CUDA tests (skipped without CUDA), the benchmark, and the JSON
each step leaves in $OUT."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import ROOT

TARGETS = 4
BATCH_SIZES = [2]  # one size keeps the check short; the script's loop over sizes is the same
REFERENCES = 2  # bench_gpu.py's prompts: two bedroom frames (or generated images)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-out")
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu/run.sh"), "--device", "cpu", "--image-size", "64", "--targets",
         str(TARGETS), "--batch-sizes", ",".join(map(str, BATCH_SIZES)), "--tests", "tests/models/sam2/cuda_checks.py",
         "--budget", "120"],
        cwd=ROOT, env={**os.environ, "OUT": str(out)}, capture_output=True, text=True, timeout=300,
    )
    return result, out


def test_the_script_succeeds_and_records_every_step(run):
    result, out = run
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["device"] == "cpu"
    assert (record["install"]["mode"], record["install"]["status"]) == ("already-importable", 0)
    tests = record["tests"]
    assert tests["status"] == 0 and tests["paths"] == ["tests/models/sam2/cuda_checks.py"]
    assert tests["counts"]["tests"] > 0 and tests["counts"]["failures"] == tests["counts"]["errors"] == 0
    import torch

    if not torch.cuda.is_available():
        assert tests["counts"]["skipped"] == tests["counts"]["tests"]
        assert "needs CUDA" in (out / "pytest.txt").read_text()
    assert record["bench"]["status"] == 0 and (out / record["bench"]["json"]).is_file()


def test_the_benchmark_labels_every_target_with_the_cache_off_cold_and_warm(run):
    _, out = run
    bench = json.loads((out / "bench_gpu.json").read_text())
    assert bench["complete"] and bench["device"] == "cpu" and bench["gpu"] is None
    assert bench["image_size"] == 64 and bench["targets"] == TARGETS
    runs = {(r["batch_size"], r["cache"]): r for r in bench["runs"]}
    assert sorted(runs) == sorted((b, m) for b in BATCH_SIZES for m in ("off", "cold", "warm"))
    for (b, mode), r in runs.items():
        assert (r["labeled"], r["failed"]) == (TARGETS, 0), (b, mode)
        assert r["targets_per_s"] == pytest.approx(TARGETS / r["batch_s"]) and r["call_s"] >= r["batch_s"] > 0
        assert r["gpu_busy_fraction"] is None and r["peak_gpu_mib_allocated"] is None  # no GPU here
        seen = TARGETS + REFERENCES
        expected = {"off": (None, None), "cold": (0, seen), "warm": (seen, 0)}[mode]
        # Each target file is its own content (the same pixels, another trailer), so a cold cache misses all.
        assert (r["cache_images_read"], r["cache_images_encoded"]) == expected, (b, mode)
