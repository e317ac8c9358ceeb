"""Scaling out: targets/s of the local executor and of Ray with 1 and 2 workers (one per GPU on a GPU machine).

The same targets (generated 640x480 images), the same prompts (assets/demo), untrained SAM 2.1 tiny
(the amount of computation doesn't depend on the weights' values; `--checkpoint` for real ones), the
feature cache off, on a local Ray instance this script starts (`--ray-address` to use a cluster).
Per run it times the whole `label_batch` call (setup: model build, Ray start and workers included) and
the steady part, from the first labeled target's model ready (local: the batch itself; Ray: the first
worker ready) to the end. Prints:

- targets/s, steady and overall, of each run;
- Ray's overhead per target in ms: steady time per target with 1 Ray worker minus the local executor's;
- scaling efficiency: steady targets/s with N workers / (N x with 1 worker).

and merges them into benchmarks/results.json under "scaling" (the other keys are kept).

Run: `python benchmarks/bench_scaling.py` (on 2 CPU cores, about 10 minutes); `--quick` for a smoke run
(16 targets at 256 px, a minute or two). On a shared or busy machine the numbers mean little.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, merge_results
from PIL import Image

import labeler


def make_targets(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` textured 640x480 JPEGs with a few discs and squares each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:480, 0:640]
    for n in range(count):
        img = np.stack([(xx * (1 + c) + yy * (3 - c) + 40 * c + 7 * n) % 256 for c in range(3)], -1) * 0.5
        img = img + rng.normal(0, 12, img.shape)
        for _ in range(4):
            cx, cy, r = rng.integers(0, 640), rng.integers(0, 480), rng.integers(20, 90)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
            x, y = rng.integers(0, 560), rng.integers(0, 400)
            img[y : y + 60, x : x + 60] = rng.integers(0, 256, 3)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"t{n:04d}.jpg", quality=92)
    return folder


class ReadyTimes(logging.Handler):
    """When each Ray worker said it was ready (the executor logs "worker N ready on ...")."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def emit(self, record):
        if record.getMessage().startswith("worker ") and " ready on " in record.getMessage():
            self.times.append(time.perf_counter())


def timed_run(args, targets: Path, out: Path, **executor) -> dict:
    ready = ReadyTimes()
    logging.getLogger("labeler").addHandler(ready)
    start = time.perf_counter()
    summary = labeler.label_batch(ROOT / "assets/demo/prompts.json", targets=targets, output=out,
                                  checkpoint=args.checkpoint, image_size=args.image_size, device=args.device,
                                  batch_size=args.batch_size, cache=False, progress=False,
                                  ray_address=args.ray_address, **executor)
    end = time.perf_counter()
    logging.getLogger("labeler").removeHandler(ready)
    # Local: the batch is summary.seconds (the model is built before it). Ray: from the first ready worker.
    steady = summary.seconds if not ready.times else end - ready.times[0]
    # The exports and report.png after the batch are the same in every run; leave them out of "steady".
    steady = min(steady, summary.seconds)
    n = summary.labeled
    return {"targets": n, "total_s": end - start, "steady_s": steady, "targets_per_s": n / steady,
            "overall_targets_per_s": n / (end - start)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=96)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--checkpoint", default="none", help="default: untrained weights")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ray-address", default=None, help="default: a local Ray instance for each run")
    ap.add_argument("--quick", action="store_true", help="16 targets at 256 px, a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.targets, args.image_size = 16, 256
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import torch

    gpus = torch.cuda.device_count() if args.device in ("auto", "cuda") else 0
    counts = [1, gpus] if gpus > 1 else [1, 2]  # one worker per GPU on a GPU machine
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        targets = make_targets(tmp / "targets", args.targets)
        runs = {"local": timed_run(args, targets, tmp / "local")}
        print(f"local      {runs['local']['targets_per_s']:7.2f} targets/s steady, "
              f"{runs['local']['overall_targets_per_s']:.2f} overall", flush=True)
        for n in counts:
            runs[f"ray_{n}"] = r = timed_run(args, targets, tmp / f"ray{n}", executor="ray", workers=n)
            print(f"ray x{n}     {r['targets_per_s']:7.2f} targets/s steady, {r['overall_targets_per_s']:.2f} overall",
                  flush=True)
    local, one, many = runs["local"], runs[f"ray_{counts[0]}"], runs[f"ray_{counts[-1]}"]
    overhead_ms = (1 / one["targets_per_s"] - 1 / local["targets_per_s"]) * 1000
    efficiency = many["targets_per_s"] / (counts[-1] * one["targets_per_s"])
    print(f"Ray overhead per target: {overhead_ms:.1f} ms (1 worker against the local executor, steady)")
    print(f"scaling efficiency, {counts[-1]} workers: {efficiency:.0%} of {counts[-1]}x one worker's targets/s")
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"{gpus} GPU(s), torch {torch.__version__}",
        "device": "cuda" if gpus else "cpu", "image_size": args.image_size, "targets": args.targets,
        "batch_size": args.batch_size, "quick": args.quick, "runs": runs,
        "ray_overhead_ms_per_target": overhead_ms, "scaling_efficiency": efficiency, "workers": counts,
    }
    print(f"wrote {merge_results('scaling', result)} (\"scaling\")")


if __name__ == "__main__":
    main()
