"""The pipeline's own ceiling: a batch whose model costs almost nothing, every output written.

Untrained SAM 2.1 tiny at `--image-size 64` (the model's work is under 1% of a 1024 px run), 2
references x 2 objects, 1280x960 JPEG targets (the real bedroom frames cropped to 4:3 and resized;
generated textured images where absent). Times the local executor's `run_batch` with a labeler
conditioned beforehand (`backend.condition`; what `label_batch` runs between building the model and
the exports): targets/s (wall) and CPU ms per target (the process's CPU time over the batch, all
threads).

`--repo PATH` imports `labeler` from another checkout of the same layout (a model backend, a batch
recorder), so a "before" can be measured in the same sitting, e.g. `git worktree add /tmp/before
COMMIT` then, alternately, `python benchmarks/bench_pipeline.py --repo /tmp/before --key before` and
`python benchmarks/bench_pipeline.py --key after`. `OMP_WAIT_POLICY=PASSIVE` in front times it as
`python main.py` runs (main.py sets it). Each run merges its numbers into
benchmarks/results.json under "pipeline_ceiling" -> key (a list, one entry per run).
`--profile N` prints cProfile's top N functions (by own time) instead of recording.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from common import REAL, ROOT, load_results, merge_results, use_checkout
from PIL import Image

BEDROOM = REAL / "bedroom"
SIZE = (1280, 960)


def make_targets(folder: Path, count: int) -> tuple[list[Path], list[Path]]:
    """Two references and `count` 1280x960 JPEG targets under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = sorted(BEDROOM.glob("*.jpg")) if BEDROOM.is_dir() else []
    if frames:
        sources = [Image.open(p).convert("RGB") for p in frames]
    else:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:540, 0:960]
        sources = [Image.fromarray(np.clip(np.stack([(xx * (1 + c) + yy * (3 - c) + 17 * i) % 256 for c in range(3)], -1)
                                           + rng.normal(0, 20, (540, 960, 3)), 0, 255).astype(np.uint8))
                   for i in range(12)]
    images = []
    for i in range(count + 2):
        src = sources[i % len(sources)]
        w, h = src.size
        cw = h * 4 // 3
        x0 = (w - cw) * (i % 3) // 2  # left, centre, right crops
        path = folder / (f"ref{i}.jpg" if i < 2 else f"t{i - 2:04d}.jpg")
        src.crop((x0, 0, x0 + cw, h)).resize(SIZE, Image.BICUBIC).save(path, quality=90)
        images.append(path)
    return images[:2], images[2:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose labeler to import")
    ap.add_argument("--key", default=None, help="results.json key (default: the repo's git commit)")
    ap.add_argument("--targets", type=int, default=40)
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N, record nothing")
    args = ap.parse_args()
    use_checkout(args.repo)  # before the first `import labeler`
    warnings.filterwarnings("ignore", message=r"cannot import name '_C'")
    import labeler
    from labeler.batch.local import run_batch
    from labeler.batch.recorder import BatchRecorder
    from labeler.models.backend import ModelSettings
    from labeler.models.sam2.backend import Sam2Backend
    from labeler.prompts.prompt_set import ObjectGuides, PromptSet, ReferenceGuides
    from labeler.utils.images import list_images

    assert Path(labeler.__file__).resolve().is_relative_to(args.repo.resolve()), labeler.__file__
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        refs, targets = make_targets(tmp / "targets", args.targets)
        (tmp / "refs").mkdir()
        refs = [r.rename(tmp / "refs" / r.name) for r in refs]
        w, h = SIZE
        prompts = PromptSet([
            ReferenceGuides(refs[0], w, h, [ObjectGuides(1, points=[(280, 620), (330, 400)], labels=[1, 1]),
                                            ObjectGuides(2, box=(400, 0, 700, 700))]),
            ReferenceGuides(refs[1], w, h, [ObjectGuides(1, points=[(300, 590)], labels=[1]),
                                            ObjectGuides(2, box=(420, 20, 720, 740))]),
        ])
        backend = Sam2Backend(ModelSettings("tiny", checkpoint="none", image_size=64, device="cpu"))
        targets = list_images(tmp / "targets")

        def batch(folder, targets):  # as label_batch runs the local executor
            recorder = BatchRecorder(folder, targets, {}, "bench", progress=False)
            return run_batch(backend.condition(prompts), recorder, prepare=backend.prepare)

        batch(tmp / "warm", targets[:2])  # first-call costs, page cache
        out = tmp / "out"
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            batch(out, targets)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
            return
        ru0, cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
        summary = batch(out, targets)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        assert summary.labeled == len(targets), summary
        sizes = {d.name: sum(p.stat().st_size for p in d.iterdir()) / len(targets) for d in out.iterdir() if d.is_dir()}
    result = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "repo": str(args.repo.resolve()),
        "targets": len(targets),
        "targets_per_s": len(targets) / wall,
        "cpu_ms_per_target": 1000 * cpu / len(targets),
        "wall_s": wall,
        "user_s": ru1.ru_utime - ru0.ru_utime,
        "system_s": ru1.ru_stime - ru0.ru_stime,
        "cpus": len(os.sched_getaffinity(0)),
        "bytes_per_target": {k: round(v) for k, v in sorted(sizes.items())},
    }
    key = args.key or _commit(args.repo)
    print(f"{key}: {result['targets_per_s']:.2f} targets/s, {result['cpu_ms_per_target']:.0f} ms CPU per target "
          f"(user {result['user_s']:.1f} s, system {result['system_s']:.1f} s, wall {wall:.1f} s); "
          f"bytes per target {result['bytes_per_target']}")
    section = load_results("pipeline_ceiling", {
        "what": "run_batch, untrained SAM 2.1 tiny at --image-size 64, 2 refs x 2 objects, 1280x960 JPEG "
                "targets, every per-target output written, no exports (benchmarks/bench_pipeline.py)",
    })
    section["machine"] = f"{platform.machine()}, {os.cpu_count()} threads"
    section.setdefault(key, []).append(result)
    print(f"wrote {merge_results('pipeline_ceiling', section)} (\"pipeline_ceiling\" -> {key!r})")


def _commit(repo: Path) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or str(repo)


if __name__ == "__main__":
    main()
