"""Running a batch: targets are read ahead, labeled one at a time, written behind, and recorded.

Reading (decoding) and writing (post-processing, encoding) run on worker threads, as many of each
as the process may use CPUs (their work, in PIL, OpenCV and NumPy, releases the GIL), with a fixed
number of targets in flight; records are kept in target order, so any number of workers writes the
same folder.

A rerun skips targets the output folder's manifest records as labeled with the same fingerprint;
a stop request (SIGINT, SIGTERM) ends the batch after the current target with every record saved.

This is the local executor; `pipeline.label_batch` runs it with everything around it (checks,
the model, exports, the review sheet, meshes).

Usage: `summary = run_batch(labeler, list_images("targets"), Path("output"), classes, fingerprint)`.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..models.sam2.tracker import Labeler, to_model_input
from ..outputs.folder import Manifest, OutputFolder, TargetRecord, output_stems
from ..outputs.writers import ResultsTable, TargetWriter, save_records
from ..utils.files import remove_temp_files
from ..utils.hashing import content_hash
from ..utils.images import ImageReadError, read_rgb

log = logging.getLogger(__name__)
PREFETCH = 2  # targets decoded ahead of the model beyond one per worker; the same for writes left pending
SAVE_EVERY = 2.0  # seconds between saves of manifest.json and results.csv during a batch


@dataclass
class BatchSummary:
    """What a run did: counts, per-ID presence over all targets, time."""

    targets: int
    labeled: int
    skipped: int
    failed: int
    present: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False
    meshes: object = None  # meshes.MeshSummary after a --mesh run
    reviewed: int = 0  # targets a person reviewed: kept as they are

    @property
    def exit_code(self) -> int:
        """The command line's: 0 all labeled, 1 some target (or, with meshes, some object) failed."""
        return 1 if self.failed or (self.meshes is not None and self.meshes.failed) else 0

    def __str__(self) -> str:
        rate = self.labeled / self.seconds if self.seconds > 0 else 0.0
        found = ", ".join(f"ID {k}: {n}" for k, n in sorted(self.present.items())) or "none"
        return (
            f"{self.targets} targets: {self.labeled} labeled, {self.skipped} already labeled, {self.failed} failed"
            f"{f' ({self.reviewed} reviewed, kept)' if self.reviewed else ''}"
            f"{' (interrupted)' if self.interrupted else ''}; objects found on ({found}); "
            f"{self.seconds:.1f} s, {rate:.2f} images/s"
        )


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


def label_chunk(labeler: Labeler, rgbs: list, image_hashes: list[str] | None = None,
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


def read_target(path: Path, image_size: int | None) -> tuple:
    """(rgb, model input, content hash): a target decoded, resized and normalised for a model of
    `image_size` (None: no model input), and hashed, off the model's thread (a reading worker's job)."""
    rgb = read_rgb(path)
    return rgb, to_model_input(rgb, image_size) if image_size else None, content_hash(path)


def label_and_write(labeler: Labeler, writer: TargetWriter, writes: ThreadPoolExecutor,
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


def targets_to_label(manifest: Manifest, targets: list[Path], stems: list[str], run_fingerprint: str,
                     force: bool) -> tuple[list[int], set[int]]:
    """(todo, reviewed): indices of the targets to label (refs mode), and of those a person reviewed.

    Shared by the local executor and the Ray one (`ray_executor`), so both resume the same way.
    """
    # A target a person reviewed is never labeled again (not with other prompts, not with force).
    reviewed = {i for i, t in enumerate(targets) if manifest.is_reviewed(t)}
    todo = [i for i, (t, s) in enumerate(zip(targets, stems))
            if i not in reviewed and (force or not manifest.is_done(t, s, run_fingerprint))]
    return todo, reviewed


def run_batch(
    labeler: Labeler,
    targets: list[Path],
    output_dir: str | Path | OutputFolder,
    classes: dict[int, str],
    run_fingerprint: str,
    force: bool = False,
    progress: bool = True,
    stop: threading.Event | None = None,
    batch_size: int = 1,
    settings: dict | None = None,
    manifest: Manifest | None = None,
    workers: int | None = None,
) -> BatchSummary:
    """Label the targets not yet labeled with `run_fingerprint` (all with `force`), then write results.csv.

    batch_size: targets per forward (refs mode; chain mode runs one at a time).
    settings: the run's settings, recorded in the manifest. manifest: the folder's, when the caller loaded it.
    workers: reading and writing threads each (default: `default_workers()`); the outputs don't depend on it.
    """
    start = time.perf_counter()
    steady_heap()
    folder = output_dir if isinstance(output_dir, OutputFolder) else OutputFolder(output_dir)
    manifest = manifest if manifest is not None else folder.manifest()
    if settings is not None:
        manifest.settings = settings
    stems = output_stems(targets)
    todo, reviewed = targets_to_label(manifest, targets, stems, run_fingerprint, force)
    if labeler.memory == "chain" and 0 < len(todo) < len(targets) - len(reviewed):
        log.info("chain mode: %d of %d targets are labeled already, but a chain can't resume mid-way; "
                 "labeling the whole chain again", len(targets) - len(todo), len(targets))
        todo = list(range(len(targets)))  # reviewed frames still feed the chain; their files stay as they are
    elif labeler.memory == "chain" and todo:
        todo = sorted(set(todo) | reviewed)
    remove_temp_files(folder.root)  # what a killed run may have left
    writer = TargetWriter(folder, classes)
    done = {"labeled": 0, "failed": 0}
    interrupted = False
    last_save = time.monotonic()

    def save():
        save_records(folder, manifest, targets, classes)

    pending: deque = deque()  # futures of records, in target order: recorded once the files are written

    def finish_oldest():
        record = pending.popleft().result()
        if record.status == "failed":
            log.error("skipped %s: %s", record.name, record.error)
        manifest.record(run_fingerprint, record)
        done[record.status] += 1

    workers = workers or default_workers()
    chunk = batch_size if labeler.memory == "refs" else 1
    ahead = max(PREFETCH + workers, chunk)  # bounds the targets in flight: read ahead, and written behind
    size = getattr(getattr(labeler, "predictor", None), "image_size", None)  # None: a stand-in model

    def read(i):
        return reader.submit(read_target, targets[i], size)

    with ThreadPoolExecutor(workers, "read") as reader, ThreadPoolExecutor(workers, "write") as writes, \
            logging_redirect_tqdm():
        reads = deque(read(i) for i in todo[:ahead])
        bar = tqdm(total=len(todo), unit="img", disable=not progress)
        try:
            for n in range(0, len(todo), chunk):
                if stop is not None and stop.is_set():
                    interrupted = True
                    break
                batch = todo[n : n + chunk]
                for i in todo[n + ahead : n + ahead + len(batch)]:
                    reads.append(read(i))
                items = [(targets[i], stems[i], reads.popleft(), i not in reviewed) for i in batch]
                pending.extend(r for r in label_and_write(labeler, writer, writes, items) if r is not None)
                release_free_heap()
                bar.update(len(batch))
                while len(pending) > ahead:
                    finish_oldest()
                if time.monotonic() - last_save > SAVE_EVERY:
                    save()
                    last_save = time.monotonic()
        finally:
            bar.close()
            for f in reads:
                f.cancel()
            while pending:
                finish_oldest()
            save()
    counts = ResultsTable(classes, manifest.records(targets)).present_counts()
    return BatchSummary(
        targets=len(targets),
        labeled=done["labeled"],
        skipped=len(targets) - len(todo) + len(reviewed & set(todo)),
        reviewed=len(reviewed),
        failed=done["failed"],
        present={k: counts.get(k, 0) for k in labeler.object_ids},
        seconds=time.perf_counter() - start,
        interrupted=interrupted,
    )
