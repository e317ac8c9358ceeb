"""The local executor: targets are read ahead, labeled in this process, written behind; and what a chunk of
targets takes, for every executor (`read_target`, `label_and_write`).

Reading (decoding, the model input) and writing (post-processing, encoding) run on worker threads, as
many of each as the process may use CPUs (their work, in PIL, OpenCV and NumPy, releases the GIL), with a
fixed number of targets in flight. The to-do list, the records' order, saves, the stop request and the
summary are the `BatchRecorder`'s, so any number of workers writes the same folder, and so does the Ray
executor. `pipeline.label_batch` runs it with everything around it (checks, the model, exports, the
review sheet, meshes).

Usage:
    recorder = BatchRecorder(OutputFolder("output"), list_images("targets"), classes, fingerprint)
    summary = run_batch(backend.condition(prompts), recorder, prepare=backend.prepare)
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from ..outputs.folder import TargetRecord
from ..outputs.writers import TargetWriter
from ..utils.hashing import content_hash
from ..utils.images import ImageReadError, read_rgb
from .recorder import BatchRecorder, BatchSummary

log = logging.getLogger(__name__)
PREFETCH = 2  # targets decoded ahead of the model beyond one per worker; the same for writes left pending


try:  # glibc's; absent on other C libraries, where the heap is left to the allocator
    _libc = ctypes.CDLL(None)
    _mallopt, _malloc_trim = _libc.mallopt, _libc.malloc_trim
except (AttributeError, OSError, TypeError):
    _mallopt = _malloc_trim = None
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from malloc.h


def steady_heap() -> None:
    """Keep glibc's heap placement the same from target to target (call once, before a batch).

    glibc's mmap threshold moves by itself (128 KiB up to 32 MiB, as blocks are freed), so where the
    image encoder's 12-25 MiB activations land, and with it the peak, varied by about 130 MiB
    between identical 1024-px targets. A fixed 64 MiB threshold keeps them in the heap every time.
    """
    if _mallopt is not None:
        _mallopt(_M_MMAP_THRESHOLD, 64 << 20)


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS, so memory stays flat over a long batch.

    glibc keeps freed blocks below its mmap threshold in its arenas, where a long batch fragments
    them: without this, peak memory grew by 108 MiB from 20 to 200 targets. One call takes about
    10 ms.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def free_memory() -> None:
    """Collect garbage and hand cached GPU memory back (before a retry, or before SAM 3D)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


OUT_OF_MEMORY = "out of GPU memory, twice (try a smaller --image-size or --batch-size)"


def label_chunk(labeler, rgbs: list, image_hashes: list[str] | None = None,
                inputs: list | None = None) -> list:
    """Detections for each image, or None for one that ran out of GPU memory twice.

    image_hashes: the images' content hashes, which key the labeler's feature cache (if it has one).
    inputs: their model inputs, made ahead (`read_target`). Stand-in labelers get neither.
    On running out of memory, what can be freed is freed and each image is retried once, alone.
    """
    extra = {}
    if image_hashes is not None and getattr(labeler, "features", None) is not None:
        extra["image_hashes"] = image_hashes
    if inputs is not None and all(x is not None for x in inputs):
        extra["inputs"] = inputs
    try:
        return labeler.label_many(rgbs, **extra)
    except torch.OutOfMemoryError:
        free_memory()
        log.warning("out of GPU memory; freed what could be freed and retrying once, one target at a time")
    results = []
    for rgb in rgbs:
        try:
            results.append(labeler.label(rgb))
        except torch.OutOfMemoryError:
            free_memory()
            results.append(None)
    return results


def default_workers() -> int:
    """Reading and writing threads each: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_target(path: Path, prepare: Callable | None = None) -> tuple:
    """(rgb, model input, content hash): a target decoded, made into the model's input by `prepare`
    (`ModelBackend.prepare`; None: no model input), and hashed, off the model's thread (a reading worker's job)."""
    rgb = read_rgb(path)
    return rgb, prepare(rgb) if prepare is not None else None, content_hash(path)


def label_and_write(labeler, writer: TargetWriter, writes: ThreadPoolExecutor,
                    chunk: list[tuple[Path, str, Future, bool]]) -> list[Future | None]:
    """Label one chunk of targets and queue their files' writing on `writes`; a future of each record, in order.

    chunk: (target, output stem, future of its `read_target`, kept) per target. A target that can't
    be read, or ran out of GPU memory twice, gets a failed record; one not kept (a reviewed frame
    that only feeds a chain) is labeled but not written: None. Both executors run this per chunk.
    """
    read, failures = [], {}
    for n, (target, _, reading, _) in enumerate(chunk):
        try:
            read.append((n, *reading.result()))
        except ImageReadError as e:
            failures[n] = str(e).removeprefix(f"{target}: ")
    results = label_chunk(labeler, [r[1] for r in read], [r[3] for r in read], [r[2] for r in read]) if read else []
    records: list[Future | None] = [None] * len(chunk)
    for (n, rgb, _, file_hash), detections in zip(read, results):
        target, stem, _, kept = chunk[n]
        if detections is None:
            failures[n] = OUT_OF_MEMORY
        elif kept:
            records[n] = writes.submit(write_target, writer, target, stem, rgb, detections, file_hash)
    for n, reason in failures.items():
        target, stem, _, kept = chunk[n]
        if kept:
            records[n] = _failure(target, stem, reason)
    return records


def write_target(writer: TargetWriter, target: Path, stem: str, rgb, detections: list,
                 file_hash: str = "") -> TargetRecord:
    """Write one labeled target's files and return its record (what a writing worker runs per target)."""
    writer.write(stem, rgb, detections)
    return TargetRecord.from_detections(target, stem, detections, file_hash)


def _failure(target: Path, stem: str, reason: str) -> Future:
    """A failed target's record, queued like a write so that records keep the targets' order."""
    done = Future()
    done.set_result(TargetRecord(target, stem, "failed", error=" ".join(reason.split())))
    return done


def run_batch(labeler, recorder: BatchRecorder, batch_size: int = 1, workers: int | None = None,
              prepare: Callable | None = None) -> BatchSummary:
    """Label the recorder's to-do list in this process; the batch's summary.

    labeler: a `TargetLabeler` (`ModelBackend.condition`). batch_size: targets per forward (refs mode; chain
    mode runs one at a time). workers: reading and writing threads each (default: `default_workers()`); the
    outputs don't depend on it. prepare: the model input of an image (`ModelBackend.prepare`), made by the
    reading threads; None: the labeler makes its own (stand-ins).
    """
    steady_heap()
    todo, targets = recorder.todo, recorder.targets
    writer = TargetWriter(recorder.folder, recorder.classes)
    workers = workers or default_workers()
    chunk = batch_size if labeler.memory == "refs" else 1
    ahead = max(PREFETCH + workers, chunk)  # bounds the targets in flight: read ahead, and written behind
    pending: deque = deque()  # (to-do position, future of its record or None), in to-do order

    def read(i):
        return reader.submit(read_target, targets[i], prepare)

    def finish_oldest():
        position, record = pending.popleft()
        recorder.accept(position, record.result() if record is not None else None)

    with ThreadPoolExecutor(workers, "read") as reader, ThreadPoolExecutor(workers, "write") as writes, recorder:
        reads = deque(read(i) for i in todo[:ahead])
        try:
            for n in range(0, len(todo), chunk):
                if recorder.stop_requested:
                    recorder.interrupted = True
                    break
                positions = range(n, min(n + chunk, len(todo)))
                for i in todo[n + ahead : n + ahead + len(positions)]:
                    reads.append(read(i))
                items = [(recorder.target(p), recorder.stem(p), reads.popleft(), recorder.kept(p)) for p in positions]
                pending.extend(zip(positions, label_and_write(labeler, writer, writes, items)))
                release_free_heap()
                while len(pending) > ahead:
                    finish_oldest()
        finally:
            for f in reads:
                f.cancel()
            while pending:
                finish_oldest()
    return recorder.summary(labeler.object_ids)
