"""bf16 against fp32 (`--precision`): seconds per target end to end, and how far bf16's masks are from fp32's.

SAM 2.1 tiny at 1024 px, refs mode, 2 references x 2 objects (SAM 2's example clicks on two bedroom
frames), on the real photos in ../shared/data/real (generated images where absent), the feature cache
off. One model; `label_batch` labels the targets into a fresh output folder per run, every output
written (masks, overlays, results.csv, manifest, report.png), alternating fp32, bf16, fp32, bf16, ...
so that a machine's drift (other load, clocks) falls on both alike. Per run: `BatchSummary.seconds`
(read, label, write every target) over the targets; the model is warmed up first in each precision.

Then the masks: for every target and object of the real photos, the IoU of the bf16 run's id mask with
the fp32 run's (both absent: not counted; present in one only: IoU 0). Untrained weights (the default)
give noise masks, whose IoU says how bf16 moves logits near 0, not how it moves a trained model's
masks: pass `--checkpoint checkpoints/sam2.1_hiera_tiny.pt` for that.

bf16 pays off where it is native: CUDA, and CPUs with AMX-BF16 or AVX512-BF16 (`--precision auto` picks
it there). Elsewhere torch emulates it, far slower than fp32: there the timing shows that cost.

Prints a table and merges it into benchmarks/results.json under "precision" (`BENCHMARK_RESULTS=PATH` for
another file). Run: `python benchmarks/bench_precision.py` (`--device cuda` on a GPU); `--quick` for a
smoke run (128 px, 2 targets, one run each).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_labeling import image_set, prompts_for
from common import REAL, merge_results
from PIL import Image

from labeler.batch.pipeline import label_batch
from labeler.models.backend import ModelSettings
from labeler.models.common import cpu_has_native_bf16, resolve_device
from labeler.models.sam2.backend import Sam2Backend
from labeler.outputs.folder import output_stems

PRECISIONS = ("fp32", "bf16")


def mask_ious(a: Path, b: Path, targets: list[Path], object_ids: list[int]) -> list[float]:
    """IoU of each (target, object)'s id mask in output folder `a` with folder `b`'s (both absent: left out)."""
    ious = []
    for stem in output_stems(targets):
        for k in object_ids:
            pa, pb = a / "id_masks" / f"{stem}_id{k}.png", b / "id_masks" / f"{stem}_id{k}.png"
            if not pa.exists() and not pb.exists():
                continue
            ma = np.asarray(Image.open(pa)) > 0 if pa.exists() else None
            mb = np.asarray(Image.open(pb)) > 0 if pb.exists() else None
            if ma is None or mb is None:
                ious.append(0.0)
                continue
            ious.append(float((ma & mb).sum() / max((ma | mb).sum(), 1)))
    return ious


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--targets", type=int, default=8, help="targets per run")
    ap.add_argument("--runs", type=int, default=2, help="runs per precision, alternating")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--checkpoint", default="none", help="default: untrained weights (see the docstring)")
    ap.add_argument("--quick", action="store_true", help="128 px, 2 targets, one run each: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.image_size, args.targets, args.runs = 128, 2, 1

    import torch

    device = resolve_device(args.device)
    settings = ModelSettings("tiny", checkpoint=args.checkpoint, image_size=args.image_size, device=device.type)
    first = Sam2Backend(settings)
    backends = {p: Sam2Backend(replace(settings, precision=p), predictor=first.predictor) for p in PRECISIONS}
    runs: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        refs, targets = image_set(tmp / "images", args.targets + 1)
        warm, targets = targets[:1], targets[1:]
        prompts = prompts_for(refs, 2)
        for name, group in (("warm", warm), ("targets", targets)):
            (tmp / name).mkdir()
            for t in group:
                (tmp / name / t.name).symlink_to(t.resolve())
        common = dict(checkpoint=args.checkpoint, image_size=args.image_size, device=device.type, progress=False,
                      cache=False, batch_size=args.batch_size)
        for p in PRECISIONS:  # torch's first-run costs, in each precision
            label_batch(prompts, tmp / "warm", tmp / f"warm-{p}", backend=backends[p], **common)
        for r in range(args.runs):
            for p in PRECISIONS:
                t0 = time.perf_counter()
                summary = label_batch(prompts, tmp / "targets", tmp / f"{p}-{r}", backend=backends[p], **common)
                per = summary.seconds / summary.labeled
                runs[p].append(per)
                print(f"run {r + 1}/{args.runs} {p}: {per:7.2f} s/target  (call {time.perf_counter() - t0:.1f} s, "
                      f"{summary.labeled} targets)", flush=True)
        result = {
            "machine": f"{platform.processor() or platform.machine()}, native bf16: {cpu_has_native_bf16()}, "
                       f"{torch.get_num_threads()} threads, torch {torch.__version__}"
                       + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
            "device": device.type, "image_size": args.image_size, "targets": len(targets), "runs": args.runs,
            "batch_size": args.batch_size, "references": "2 x 2 objects", "quick": args.quick,
            "checkpoint": "untrained" if args.checkpoint == "none" else Path(args.checkpoint).name,
            "images": "real photos" if REAL.is_dir() else "generated",
            "s_per_target": {p: runs[p] for p in PRECISIONS},
            "median_s_per_target": {p: float(np.median(runs[p])) for p in PRECISIONS},
        }
        result["bf16_speedup"] = result["median_s_per_target"]["fp32"] / result["median_s_per_target"]["bf16"]
        print(f"median s/target: fp32 {result['median_s_per_target']['fp32']:.2f}, bf16 "
              f"{result['median_s_per_target']['bf16']:.2f}: bf16 is {result['bf16_speedup']:.2f}x fp32's speed")
        if REAL.is_dir():
            ious = mask_ious(tmp / "fp32-0", tmp / "bf16-0", targets, prompts.object_ids)
            result["mask_iou_bf16_vs_fp32"] = {"mean": float(np.mean(ious)), "min": float(np.min(ious)),
                                               "pairs": len(ious)} if ious else None
            if ious:
                print(f"masks' IoU, bf16 against fp32, {len(ious)} (target, object) pairs on the real photos: "
                      f"mean {np.mean(ious):.4f}, min {np.min(ious):.4f}"
                      + (" (untrained weights: noise masks)" if args.checkpoint == "none" else ""))
            else:
                print("masks' IoU: no object present in either run")
        else:
            result["mask_iou_bf16_vs_fp32"] = None
            print(f"masks' IoU skipped: the real photos are absent ({REAL})")
    print(f"wrote {merge_results('precision', result)} (\"precision\")")


if __name__ == "__main__":
    main()
