"""Labeling speed and memory: the labeler's refs mode against SAM 2's usual video route.

Untrained SAM 2.1 tiny at 1024 px on the CPU (the amount of computation doesn't depend on the
weights' values), on the real photos in ../shared/data/real (generated images where absent).
Prints a table, merges it into benchmarks/results.json under "labeling" (the other benchmarks' keys
are kept) and draws benchmarks/results.png:

1. per-target time of the labeler in refs mode, 2 references x 1, 2 and 4 objects;
2. per-target time of the usual route: `SAM2VideoPredictor.init_state` on a JPEG folder of the
   references and targets, then `propagate_in_video`;
3. the floor: the image encoder alone, per target;
4. the labeler's pipeline overhead: batch wall time minus the time inside the model;
5. peak resident memory of `python main.py --headless` labeling 20 and 200 targets.

Run: `python benchmarks/bench_labeling.py` (about 25 minutes on 2 cores; `--memory-only` for the
memory part alone, about 16 minutes; `--quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import REAL, ROOT, load_results, merge_results
from PIL import Image

from labeler.batch.local import run_batch
from labeler.batch.recorder import BatchRecorder
from labeler.models.backend import ModelSettings
from labeler.models.sam2.backend import Sam2Backend
from labeler.prompts.prompt_set import (
    ObjectGuides,
    PromptSet,
    ReferenceGuides,
    save_prompts,
)
from labeler.utils.images import read_rgb

warnings.filterwarnings("ignore", message=r"cannot import name '_C'")

# Guides on two bedroom frames (960x540), up to four objects each (SAM 2's example clicks).
GUIDES = [
    [ObjectGuides(1, points=[(210, 350), (250, 220)], labels=[1, 1]), ObjectGuides(2, box=(300, 0, 500, 400)),
     ObjectGuides(3, points=[(200, 300)], labels=[1]), ObjectGuides(4, points=[(400, 150)], labels=[1])],
    [ObjectGuides(1, points=[(230, 330)], labels=[1]), ObjectGuides(2, box=(320, 10, 520, 420)),
     ObjectGuides(3, points=[(190, 310)], labels=[1]), ObjectGuides(4, points=[(420, 160)], labels=[1])],
]


def image_set(folder: Path, count: int) -> tuple[list[Path], list[Path]]:
    """Two reference frames and `count` targets (real photos, cycled; generated where absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    if REAL.is_dir():
        frames = sorted((REAL / "bedroom").glob("*.jpg"))
        # The largest photos first, so every target count includes the biggest images.
        refs, pool = frames[:2], sorted((REAL / "photos").glob("*.jpg")) + frames[2:]
    else:
        rng = np.random.default_rng(0)
        pool = []
        for i in range(12):
            pool.append(folder / f"gen{i}.jpg")
            Image.fromarray(rng.integers(0, 256, (540, 960, 3), dtype=np.uint8)).save(pool[-1])
        refs, pool = pool[:2], pool[2:]
    targets = []
    for i in range(count):
        link = folder / f"t{i:04d}{pool[i % len(pool)].suffix}"
        link.unlink(missing_ok=True)
        link.symlink_to(pool[i % len(pool)])
        targets.append(link)
    return refs, targets


def prompts_for(refs: list[Path], objects: int) -> PromptSet:
    w, h = Image.open(refs[0]).size
    return PromptSet([ReferenceGuides(r, w, h, GUIDES[k][:objects]) for k, r in enumerate(refs)])


def time_labeler(backend, prompts, targets, batch_size=1) -> dict:
    t0 = time.perf_counter()
    labeler = backend.condition(prompts)
    setup = time.perf_counter() - t0
    rgbs = [read_rgb(p) for p in targets]
    labeler.predict(rgbs[0])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(rgbs), batch_size):
        labeler.predict_many(rgbs[i : i + batch_size])
    per_target = (time.perf_counter() - t0) / len(rgbs)
    return {"setup_s": setup, "per_target_s": per_target}


def time_video_route(predictor, prompts, targets, tmp: Path) -> dict:
    """SAM 2's own route: a JPEG folder of references and targets, init_state, prompts, propagate_in_video."""
    folder = tmp / "video"
    folder.mkdir()
    for i, p in enumerate([r.image for r in prompts.references] + targets):
        Image.open(p).convert("RGB").save(folder / f"{i:05d}.jpg", quality=95)
    t0 = time.perf_counter()
    with torch.inference_mode():
        state = predictor.init_state(str(folder))
        for k, ref in enumerate(prompts.references):
            for obj in ref.objects:
                predictor.add_new_points_or_box(
                    state, k, obj.id,
                    points=np.array(obj.points, np.float32) if obj.points else None,
                    labels=np.array(obj.labels, np.int32) if obj.points else None,
                    box=np.array(obj.box, np.float32) if obj.box else None,
                )
        frame_times = []
        last = time.perf_counter()
        for frame_idx, _, _ in predictor.propagate_in_video(state):
            now = time.perf_counter()
            if frame_idx >= len(prompts.references):
                frame_times.append(now - last)
            last = now
    total = time.perf_counter() - t0
    # Once 6 targets precede a target, its memory holds the references plus 6 earlier targets:
    # the steady state of a long batch.
    steady = frame_times[predictor.num_maskmem - 1:] or frame_times
    return {"total_s": total, "per_target_s": float(np.mean(steady)), "mean_all_targets_s": float(np.mean(frame_times)),
            "per_target_with_setup_s": total / len(targets), "targets": len(targets)}


def time_encoder(predictor, targets) -> float:
    from labeler.models.sam2.tracker import to_model_input

    images = [to_model_input(read_rgb(p), predictor.image_size)[None] for p in targets]
    with torch.inference_mode():
        predictor.forward_image(images[0])
        t0 = time.perf_counter()
        for x in images:
            predictor.forward_image(x)
    return (time.perf_counter() - t0) / len(images)


def pipeline_overhead(backend, prompts, targets, out: Path) -> dict:
    """Batch wall time (read, label, write) against the time spent inside the model."""
    labeler = backend.condition(prompts)
    model_time = 0.0
    predict_many = labeler.predict_many

    def timed(*args, **kwargs):
        nonlocal model_time
        t0 = time.perf_counter()
        result = predict_many(*args, **kwargs)
        model_time += time.perf_counter() - t0
        return result

    labeler.predict_many = timed
    t0 = time.perf_counter()
    run_batch(labeler, BatchRecorder(out, targets, {}, "bench", progress=False), prepare=backend.prepare)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "model_s": model_time, "overhead_s": wall - model_time,
            "overhead_fraction": (wall - model_time) / model_time}


def peak_memory(prompts_file: Path, targets_dir: Path, out: Path, image_size: int) -> float:
    """Peak resident memory (MiB) of a headless run, read from /proc while it runs."""
    cmd = [sys.executable, str(ROOT / "main.py"), "--headless", "--quiet", "--prompts", str(prompts_file),
           "--targets", str(targets_dir), "--output", str(out), "--checkpoint", "none",
           "--image-size", str(image_size), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    if proc.wait() != 0:
        raise RuntimeError(proc.stderr.read())
    return peak / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--targets", type=int, default=4, help="targets timed per configuration")
    ap.add_argument("--video-targets", type=int, default=9, help="targets of the usual route (steady state after 6)")
    ap.add_argument("--memory-counts", default="20,200", help="target counts for the peak-memory runs")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory runs; update results.json")
    args = ap.parse_args()
    if args.quick:
        args.image_size, args.targets, args.video_targets, args.memory_counts = 256, 2, 8, "4,8"
    counts = [int(c) for c in args.memory_counts.split(",")]
    torch.manual_seed(0)
    backend = Sam2Backend(ModelSettings("tiny", checkpoint="none", image_size=args.image_size, device="cpu"))
    predictor = backend.predictor  # SAM 2's own video route and the image encoder alone run on it
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
        "image_size": args.image_size, "targets_timed": args.targets,
        "images": "real photos" if REAL.is_dir() else "generated",
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        refs, targets = image_set(tmp / "targets", args.targets)
        if args.memory_only:
            results = {**load_results("labeling", {}), "image_size": args.image_size}
            measure_memory(results, refs, counts, tmp, args.image_size)
            save(results)
            return
        results["labeler_refs_mode"] = {}
        for objects in (1, 2, 4):
            r = time_labeler(backend, prompts_for(refs, objects), targets)
            results["labeler_refs_mode"][objects] = r
            print(f"labeler refs mode, 2 refs x {objects} object(s): {r['per_target_s']:.2f} s/target "
                  f"(setup {r['setup_s']:.1f} s)", flush=True)
        _, video_targets = image_set(tmp / "video_targets", args.video_targets)
        video = time_video_route(predictor, prompts_for(refs, 2), video_targets, tmp)
        results["video_route_2_objects"] = video
        print(f"usual route (init_state + propagate_in_video), 2 refs x 2 objects: {video['per_target_s']:.2f} "
              f"s/target in the steady state ({video['mean_all_targets_s']:.2f} mean over all {len(video_targets)}, "
              f"{video['per_target_with_setup_s']:.2f} with setup)", flush=True)
        results["encoder_floor_s"] = time_encoder(predictor, targets)
        print(f"image encoder alone: {results['encoder_floor_s']:.2f} s/target", flush=True)
        results["speedup_2_objects"] = video["per_target_s"] / results["labeler_refs_mode"][2]["per_target_s"]
        print(f"refs mode speed-up over the usual route at 2 x 2: {results['speedup_2_objects']:.2f}x", flush=True)
        overhead = pipeline_overhead(backend, prompts_for(refs, 2), targets, tmp / "out")
        results["pipeline_2_objects"] = overhead
        print(f"pipeline: wall {overhead['wall_s']:.1f} s, model {overhead['model_s']:.1f} s, overhead "
              f"{100 * overhead['overhead_fraction']:.1f}% of model time", flush=True)
        measure_memory(results, refs, counts, tmp, args.image_size)
    save(results)


def save(results: dict) -> None:
    """results.json's "labeling" (the other keys kept) and the plot beside it."""
    path = merge_results("labeling", results)
    plot(results, path.with_suffix(".png"))
    print(f"wrote {path} (\"labeling\") and {path.with_suffix('.png')}")


def measure_memory(results: dict, refs: list[Path], counts: list[int], tmp: Path, image_size: int) -> None:
    prompts_file = tmp / "prompts.json"
    save_prompts(prompts_for(refs, 1), prompts_file)
    results["peak_rss_mib"] = {}
    for count in counts:
        image_set(tmp / f"mem{count}", count)
        peak = peak_memory(prompts_file, tmp / f"mem{count}", tmp / f"mem_out{count}", image_size)
        results["peak_rss_mib"][count] = peak
        print(f"peak resident memory, {count} targets (1 object): {peak:.0f} MiB", flush=True)
    growth = results["peak_rss_mib"][counts[-1]] - results["peak_rss_mib"][counts[0]]
    results["peak_rss_growth_mib"] = growth
    print(f"growth from {counts[0]} to {counts[-1]} targets: {growth:+.0f} MiB", flush=True)


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot(1, 2, 1)
    names = [f"refs mode\n{k} obj" for k in results["labeler_refs_mode"]] + ["usual route\n2 obj", "encoder\nalone"]
    values = [r["per_target_s"] for r in results["labeler_refs_mode"].values()]
    values += [results["video_route_2_objects"]["per_target_s"], results["encoder_floor_s"]]
    ax.bar(names, values, color=["#3c78d8"] * 3 + ["#cc4125", "#999999"])
    ax.set_ylabel("seconds per target")
    ax.set_title(f"SAM 2.1 tiny, {results['image_size']} px, CPU")
    ax.tick_params(axis="x", labelsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    counts = list(results["peak_rss_mib"])
    ax2.bar([str(c) for c in counts], list(results["peak_rss_mib"].values()), color="#6aa84f")
    ax2.set_xlabel("targets")
    ax2.set_ylabel("peak resident memory (MiB)")
    ax2.set_title("peak memory of a headless run")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))


if __name__ == "__main__":
    main()
