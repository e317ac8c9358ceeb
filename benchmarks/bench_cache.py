"""Reruns with the feature cache: what a target costs when its image-encoder output is read back.

Untrained SAM 2.1 tiny at 1024 px on the CPU, 2 references x 1 object, on the real photos in
../shared/data/real (generated images where absent). `label_batch` labels the targets into one
output folder three times, with a fresh cache folder:

1. the first run (every image encoded, features stored);
2. a rerun after a threshold change (every target relabeled, features read back);
3. a rerun after a third reference is added (the new reference encoded; targets read back);

and, as a control, a run with `cache=False`. Per-target time is the batch's own time
(`BatchSummary.seconds`: read, label, write every output) over the targets; the model is warmed
up first. Prints a table and merges it into benchmarks/results.json under "feature_cache".

Run: `python benchmarks/bench_cache.py` (about 4 minutes on 2 cores); `--targets N` (default 6).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_labeling import image_set, prompts_for
from common import REAL, merge_results
from PIL import Image

from labeler.batch.pipeline import label_batch
from labeler.models.backend import ModelSettings
from labeler.models.sam2.backend import Sam2Backend
from labeler.prompts.prompt_set import PromptSet
from labeler.types.guides import ObjectGuides, ReferenceGuides

IMAGE_SIZE = 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=6)
    args = ap.parse_args()
    backend = Sam2Backend(ModelSettings("tiny", checkpoint="none", image_size=IMAGE_SIZE, device="cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        refs, targets = image_set(tmp / "images", args.targets + 1)
        warm, targets = targets[:1], targets[1:]
        folder = tmp / "targets"
        folder.mkdir()
        for t in targets:
            (folder / t.name).symlink_to(t.resolve())
        (tmp / "warm").mkdir()
        (tmp / "warm" / warm[0].name).symlink_to(warm[0].resolve())
        two = prompts_for(refs, 1)
        third = (sorted((REAL / "bedroom").glob("*.jpg"))[10] if REAL.is_dir() else targets[-1]).resolve()
        w, h = Image.open(third).size
        three = PromptSet([*two.references, ReferenceGuides(third, w, h, [ObjectGuides(1, points=[(w // 2, h // 2)],
                                                                                        labels=[1])])])
        common = dict(checkpoint="none", image_size=IMAGE_SIZE, device="cpu", progress=False, backend=backend)
        label_batch(two, tmp / "warm", tmp / "warm-out", cache=False, **common)  # torch's first-run costs

        def timed(name, prompts, output, **kw):
            t0 = time.perf_counter()
            summary = label_batch(prompts, folder, tmp / output, **common, **kw)
            per = summary.seconds / summary.labeled
            print(f"{name:44s} {per:6.2f} s/target   (call {time.perf_counter() - t0:.1f} s, "
                  f"{summary.labeled} targets)", flush=True)
            return per

        cache = tmp / "cache"
        rows = {
            "first_run_s": timed("first run (encode, store)", two, "out", cache=cache),
            "threshold_change_s": timed("rerun, threshold changed (read back)", two, "out", cache=cache,
                                        threshold=-0.5),
            "third_reference_s": timed("rerun, a third reference (read back)", three, "out", cache=cache),
            "no_cache_s": timed("control: no cache", two, "control", cache=False),
        }
        entries = sorted(cache.glob("*.feat"))
        rows["entry_mb_1024px"] = entries[0].stat().st_size / 1e6
        rows["entries"] = len(entries)
    rows["threshold_ratio"] = rows["threshold_change_s"] / rows["first_run_s"]
    rows["third_reference_ratio"] = rows["third_reference_s"] / rows["first_run_s"]
    rows.update(targets=args.targets, image_size=IMAGE_SIZE, images="real photos" if REAL.is_dir() else "generated",
                references="2 x 1 object (third: 1 object)")
    print(f"threshold change: {rows['threshold_ratio']:.2f}x the first run (goal <= 0.55); third reference: "
          f"{rows['third_reference_ratio']:.2f}x (goal <= 0.65); one entry {rows['entry_mb_1024px']:.1f} MB")
    print(f"wrote {merge_results('feature_cache', rows)} (\"feature_cache\")")


if __name__ == "__main__":
    main()
