"""Scaling out: targets/s of the local executor and of Ray with 1 and 2 workers (one per GPU on a GPU machine).

The same targets (generated 640x480 images), the same prompts (assets/demo), untrained SAM 2.1 tiny
(the amount of computation doesn't depend on the weights' values; `--checkpoint` for real ones), the
feature cache off, on a local Ray instance this script starts (`--ray-address` to use a cluster).
Per run it times the whole `label_batch` call (setup: model build, Ray start and workers included) and
the steady part, from the first target's record to the last's (the same clock for both executors).
Prints:

- targets/s, steady, of each run: the local executor and 1 Ray worker alternating (`--rounds`), at
  `--image-size` and at 64 px (a near-free model: what is left is the executor's own cost);
- Ray's overhead per target in ms at both sizes: steady time per target with 1 Ray worker minus the
  local executor's, the median over the rounds;
- scaling efficiency: steady targets/s with N workers / (N x with 1 worker).

and merges them into benchmarks/results.json under "scaling" (the other keys are kept).

Run: `python benchmarks/bench_scaling.py` (on 2 CPU cores, about 10 minutes); `--quick` for a smoke run
(16 targets at 256 px, one round, a few minutes). On a shared or busy machine the numbers mean little.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

# As main.py does, before torch loads OpenMP, and as the Ray workers get it: both executors alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from common import ROOT, merge_results  # noqa: E402
from PIL import Image  # noqa: E402

import labeler  # noqa: E402

NEAR_FREE = 64  # px: a model input this small costs next to nothing, so what remains is the executor's


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


def timed_run(args, targets: Path, out: Path, image_size: int, **executor) -> dict:
    """One `label_batch` call: its total seconds (model build, Ray start and workers included) and its
    steady rate, from the first target's record to the last's (`on_progress`), the same for both
    executors: no start-up, and none of the exports and report.png written after the batch."""
    recorded: list[float] = []
    start = time.perf_counter()
    summary = labeler.label_batch(ROOT / "assets/demo/prompts.json", targets=targets, output=out,
                                  checkpoint=args.checkpoint, image_size=image_size, device=args.device,
                                  batch_size=args.batch_size, cache=False, progress=False,
                                  ray_address=args.ray_address,
                                  on_progress=lambda done, total: recorded.append(time.perf_counter()), **executor)
    end = time.perf_counter()
    n = summary.labeled
    steady = recorded[-1] - recorded[0]  # n - 1 targets' time
    return {"targets": n, "total_s": end - start, "steady_s": steady, "targets_per_s": (n - 1) / steady,
            "overall_targets_per_s": n / (end - start)}


def overhead(args, targets: Path, tmp: Path, image_size: int, rounds: int) -> dict:
    """Local and one Ray worker, alternating `rounds` times at `image_size`: each run's steady targets/s,
    and Ray's overhead per target (ms): the median over rounds of (1 / Ray's - 1 / local's)."""
    runs = {"local": [], "ray_1": []}
    for r in range(rounds):
        for name in runs:
            executor = {"executor": "ray", "workers": 1} if name == "ray_1" else {}
            run = timed_run(args, targets, tmp / f"{name}-{image_size}-{r}", image_size=image_size, **executor)
            runs[name].append(run)
            print(f"  {image_size:4d} px, round {r + 1}: {name:6s} {run['targets_per_s']:7.2f} targets/s steady",
                  flush=True)
    per_round = [(1 / ray["targets_per_s"] - 1 / local["targets_per_s"]) * 1000
                 for local, ray in zip(runs["local"], runs["ray_1"])]
    return {"image_size": image_size, "runs": runs, "overhead_ms_per_round": per_round,
            "overhead_ms": float(np.median(per_round)),
            "ray_1_of_local": float(np.median([ray["targets_per_s"] / local["targets_per_s"]
                                               for local, ray in zip(runs["local"], runs["ray_1"])]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=96)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="alternating local / 1-worker rounds per size")
    ap.add_argument("--checkpoint", default="none", help="default: untrained weights")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ray-address", default=None, help="default: a local Ray instance for each run")
    ap.add_argument("--quick", action="store_true", help="16 targets at 256 px, one round, a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.targets, args.image_size, args.rounds = 16, 256, 1
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import torch

    gpus = torch.cuda.device_count() if args.device in ("auto", "cuda") else 0
    many = gpus if gpus > 1 else 2  # one worker per GPU on a GPU machine
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        targets = make_targets(tmp / "targets", args.targets)
        sizes = {"model": overhead(args, targets, tmp, args.image_size, args.rounds),
                 "near_free_model": overhead(args, targets, tmp, NEAR_FREE, args.rounds)}
        one = sizes["model"]["runs"]["ray_1"][-1]
        wide = timed_run(args, targets, tmp / f"ray{many}", image_size=args.image_size, executor="ray", workers=many)
        print(f"  {args.image_size:4d} px: ray x{many} {wide['targets_per_s']:7.2f} targets/s steady", flush=True)
    efficiency = wide["targets_per_s"] / (many * one["targets_per_s"])
    for key, size in sizes.items():
        print(f"Ray overhead per target at {size['image_size']} px: {size['overhead_ms']:.1f} ms "
              f"(median of {args.rounds} alternating rounds; 1 worker's targets/s = "
              f"{size['ray_1_of_local']:.0%} of the local executor's)")
    print(f"scaling efficiency, {many} workers: {efficiency:.0%} of {many}x one worker's targets/s")
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"{gpus} GPU(s), torch {torch.__version__}",
        "device": "cuda" if gpus else "cpu", "targets": args.targets, "batch_size": args.batch_size,
        "quick": args.quick, "rounds": args.rounds, **sizes, f"ray_{many}": wide,
        "ray_overhead_ms_per_target": sizes["model"]["overhead_ms"],
        "ray_overhead_ms_per_target_near_free": sizes["near_free_model"]["overhead_ms"],
        "scaling_efficiency": efficiency, "workers": [1, many],
    }
    print(f"wrote {merge_results('scaling', result)} (\"scaling\")")


if __name__ == "__main__":
    main()
