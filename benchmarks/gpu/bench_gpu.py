"""Throughput on one GPU: targets/s end to end at --batch-size 1, 4 and 16, with the feature cache off and on.

SAM 2.1 tiny (untrained: the model's computation doesn't depend on the weights' values, but its noise
masks make the written PNGs and overlays dearer than a trained model's), 1024 px, refs mode, 2 references
x 2 objects (SAM 2's example clicks on two bedroom frames), `--precision auto` (bf16 on CUDA). Targets: the
real photos (benchmarks/gpu/data/real as prepare.sh copies them, else ../shared/data/real, else generated
images), cycled to `--targets` files that differ in their bytes only (a trailer after the JPEG's end:
the same pixels, another content hash), so the feature cache sees each as a new image.

For each batch size, three `label_batch` runs into fresh output folders, every output written:
- cache off;
- cache on, cold (a fresh cache folder: every image encoded and stored);
- cache on, warm (the same cache folder, another output folder: every image read back).
Per run: targets/s over the batch (`BatchSummary.seconds`: read, label, write each target), the whole
call's seconds (conditioning, report.png), the GPU's busy fraction over the call (nvidia-smi's
utilization.gpu, sampled every 100 ms: the share of time some kernel ran), and the peak GPU memory
allocated and reserved by torch.

Writes JSON to `--out` after every run (a run cut short by a time limit leaves the finished ones). Run by
benchmarks/gpu/run.sh; `--device cpu` with tiny sizes checks it anywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common, bench_labeling

import numpy as np  # noqa: E402
from bench_labeling import prompts_for  # noqa: E402
from common import REAL, ROOT  # noqa: E402
from PIL import Image  # noqa: E402

CARRIED = ROOT / "benchmarks" / "gpu" / "data" / "real"


def photo_pool(folder: Path) -> tuple[list[Path], list[Path], str]:
    """(two reference frames, the target pool, where they came from)."""
    for source in (CARRIED, REAL):
        if (source / "bedroom").is_dir():
            frames = sorted((source / "bedroom").glob("*.jpg"))
            return frames[:2], sorted((source / "photos").glob("*.jpg")) + frames[2:], str(source)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pool = []
    for i in range(12):
        pool.append(folder / f"gen{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (540, 960, 3), dtype=np.uint8)).save(pool[-1])
    return pool[:2], pool[2:], "generated"


def make_targets(pool: list[Path], folder: Path, count: int) -> list[Path]:
    """`count` JPEGs cycling through `pool`, each with a trailer of its own after the image's end marker."""
    folder.mkdir(parents=True)
    targets = []
    for i in range(count):
        src = pool[i % len(pool)]
        targets.append(folder / f"t{i:04d}{src.suffix}")
        targets[-1].write_bytes(src.read_bytes() + f"labeler-bench-{i}".encode())
    return targets


class BusySampler:
    """nvidia-smi's utilization.gpu every 100 ms while running (None where nvidia-smi is absent or fails)."""

    def __init__(self, index: int):
        self.index, self.samples, self.proc = index, [], None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line))

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            self.reader.join(5)

    @property
    def fraction(self) -> float | None:
        return float(np.mean(self.samples)) / 100 if self.samples else None


def timed_run(backend, prompts, targets_dir: Path, out: Path, batch_size: int, cache, torch) -> dict:
    from labeler.batch.pipeline import label_batch

    cuda = backend.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    counts = CacheCounts()
    log = logging.getLogger("labeler")
    log.addHandler(counts)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        with BusySampler(backend.device.index or 0) if cuda else _Null() as busy:
            t0 = time.perf_counter()
            summary = label_batch(prompts, targets_dir, out, backend=backend, checkpoint="none",
                                  image_size=backend.image_size, device=backend.device.type, batch_size=batch_size,
                                  cache=cache, progress=False)
            call = time.perf_counter() - t0
    finally:
        log.removeHandler(counts)
        log.setLevel(level)
    run = {"labeled": summary.labeled, "failed": summary.failed, "batch_s": summary.seconds, "call_s": call,
           "cache_images_read": counts.read, "cache_images_encoded": counts.encoded,
           "targets_per_s": summary.labeled / summary.seconds, "gpu_busy_fraction": busy.fraction,
           "peak_gpu_mib_allocated": None, "peak_gpu_mib_reserved": None}
    if cuda:
        run["peak_gpu_mib_allocated"] = torch.cuda.max_memory_allocated() / 2**20
        run["peak_gpu_mib_reserved"] = torch.cuda.max_memory_reserved() / 2**20
    return run


class CacheCounts(logging.Handler):
    """The feature cache's counts the batch logs ("feature cache DIR: N images read, M encoded")."""

    def __init__(self):
        super().__init__()
        self.read = self.encoded = None

    def emit(self, record):
        found = re.search(r"feature cache .*: (\d+) images read, (\d+) encoded", record.getMessage())
        if found:
            self.read, self.encoded = int(found[1]), int(found[2])


class _Null:
    fraction = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--targets", type=int, default=256)
    ap.add_argument("--batch-sizes", default="1,4,16")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = ap.parse_args()

    import torch

    from labeler.models.backend import ModelSettings
    from labeler.models.common import cpu_has_native_bf16
    from labeler.models.sam2.backend import Sam2Backend

    backend = Sam2Backend(ModelSettings("tiny", checkpoint="none", image_size=args.image_size, device=args.device,
                                        precision=args.precision))
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"native bf16 CPU: {cpu_has_native_bf16()}, torch {torch.__version__}, Python "
                   f"{platform.python_version()}",
        "gpu": torch.cuda.get_device_name() if backend.device.type == "cuda" else None,
        "device": backend.device.type, "precision": backend.precision, "image_size": backend.image_size,
        "model": "tiny, untrained", "references": "2 x 2 objects", "memory": "refs", "targets": args.targets,
        "runs": [], "complete": False,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        refs, pool, result["images"] = photo_pool(tmp / "generated")
        prompts = prompts_for(refs, 2)
        make_targets(pool, tmp / "targets", args.targets)
        make_targets(pool[:4], tmp / "warm", 4)
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        t0 = time.perf_counter()
        for b in sorted(set(sizes)):  # torch's and the kernels' first-run costs, at every batch size
            timed_run(backend, prompts, tmp / "warm", tmp / f"warm-{b}", b, False, torch)
        result["warm_up_s"] = time.perf_counter() - t0
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for b in sizes:
            cache = tmp / f"cache-{b}"
            for mode, cache_arg in (("off", False), ("cold", cache), ("warm", cache)):
                run = {"batch_size": b, "cache": mode,
                       **timed_run(backend, prompts, tmp / "targets", tmp / f"out-{b}-{mode}", b, cache_arg, torch)}
                result["runs"].append(run)
                busy = "" if run["gpu_busy_fraction"] is None else f", GPU busy {run['gpu_busy_fraction']:.0%}"
                peak = "" if run["peak_gpu_mib_allocated"] is None else \
                    f", peak {run['peak_gpu_mib_allocated']:.0f} MiB allocated"
                print(f"batch {b:2d}, cache {mode:4s}: {run['targets_per_s']:7.2f} targets/s "
                      f"(call {run['call_s']:.1f} s{busy}{peak})", flush=True)
                args.out.write_text(json.dumps(result, indent=1) + "\n")
            shutil.rmtree(cache, ignore_errors=True)  # 1024 px: 16.8 MB a target
            for mode in ("off", "cold", "warm"):
                shutil.rmtree(tmp / f"out-{b}-{mode}", ignore_errors=True)
    result["complete"] = True
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
