"""One batch's bookkeeping, whichever executor labels it: the to-do list, records in target order, saves, the summary.

An executor only schedules work: it labels the targets at the to-do list's positions (`todo`), in
chunks it chooses, and hands each target's record back with `accept(position, record)`, in any
order. The recorder commits records to the manifest in to-do order (so every executor writes the
same manifest), saves manifest.json and results.csv every SAVE_EVERY seconds and at the end, shows
the progress, and says whether a stop was requested.

Usage (what an executor does):
    with BatchRecorder(folder, targets, classes, fingerprint, memory="refs") as recorder:
        for position in range(len(recorder.todo)):
            if recorder.stop_requested:
                recorder.interrupted = True
                break
            recorder.accept(position, label(recorder.targets[recorder.todo[position]]))
    summary = recorder.summary(object_ids)
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..outputs.folder import Manifest, OutputFolder, TargetRecord, output_stems
from ..outputs.writers import ResultsTable, save_records
from ..utils.files import remove_temp_files

log = logging.getLogger("labeler")
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


def targets_to_label(manifest: Manifest, targets: list[Path], stems: list[str], run_fingerprint: str, force: bool,
                     memory: str = "refs") -> tuple[list[int], set[int]]:
    """(todo, reviewed): indices of the targets to label, and of those a person reviewed.

    refs mode: the targets not labeled with `run_fingerprint` (all with `force`), never a reviewed one.
    chain mode: a chain can't resume mid-way, so all targets or none; reviewed frames are labeled (they
    feed the chain) but their files stay as they are.
    """
    # A target a person reviewed is never labeled again (not with other prompts, not with force).
    reviewed = {i for i, t in enumerate(targets) if manifest.is_reviewed(t)}
    todo = [i for i, (t, s) in enumerate(zip(targets, stems))
            if i not in reviewed and (force or not manifest.is_done(t, s, run_fingerprint))]
    if memory == "chain" and 0 < len(todo) < len(targets) - len(reviewed):
        log.info("chain mode: %d of %d targets are labeled already, but a chain can't resume mid-way; "
                 "labeling the whole chain again", len(targets) - len(todo), len(targets))
        todo = list(range(len(targets)))
    elif memory == "chain" and todo:
        todo = sorted(set(todo) | reviewed)
    return todo, reviewed


class BatchRecorder:
    """The manifest's side of one batch (see the module docstring).

    settings: the run's settings, recorded in the manifest. manifest: the folder's, when the caller loaded
    it. stop: set it to stop; executors hand out nothing more once `stop_requested`. on_progress: called
    with (done, total) after each target.
    """

    def __init__(self, output_dir: str | Path | OutputFolder, targets: list[Path], classes: dict[int, str],
                 run_fingerprint: str, force: bool = False, memory: str = "refs", progress: bool = True,
                 stop: threading.Event | None = None, settings: dict | None = None, manifest: Manifest | None = None,
                 on_progress: Callable[[int, int], None] | None = None):
        self.start = time.perf_counter()
        self.folder = output_dir if isinstance(output_dir, OutputFolder) else OutputFolder(output_dir)
        self.manifest = manifest if manifest is not None else self.folder.manifest()
        if settings is not None:
            self.manifest.settings = settings
        self.targets, self.classes, self.fingerprint = targets, classes, run_fingerprint
        self.progress, self.stop, self.on_progress = progress, stop, on_progress
        self.stems = output_stems(targets)
        self.todo, self.reviewed = targets_to_label(self.manifest, targets, self.stems, run_fingerprint, force, memory)
        self.interrupted = False
        self.labeled = self.failed = self.accepted = 0
        self._waiting: dict[int, TargetRecord | None] = {}  # to-do position -> record, until its turn
        self._committed = 0  # positions below this are recorded
        self._last_save = time.monotonic()
        self._bar = None

    def __enter__(self) -> BatchRecorder:
        remove_temp_files(self.folder.root)  # what a killed run may have left
        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()
        self._bar = tqdm(total=len(self.todo), unit="img", disable=not self.progress)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._bar.close()
            self.commit(everything=True)
            self.save()
            remove_temp_files(self.folder.root)  # a worker killed while writing
        finally:
            self._redirect.__exit__(*exc)

    @property
    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def target(self, position: int) -> Path:
        return self.targets[self.todo[position]]

    def stem(self, position: int) -> str:
        return self.stems[self.todo[position]]

    def kept(self, position: int) -> bool:
        """Whether the target's files and record are written (not for a reviewed frame that only feeds a chain)."""
        return self.todo[position] not in self.reviewed

    def accept(self, position: int, record: TargetRecord | None) -> None:
        """The record of the target at to-do `position` (None: labeled, not kept); committed in turn."""
        if record is not None and record.status == "failed":
            log.error("skipped %s: %s", record.name, record.error)
        self._waiting[position] = record
        self._bar.update(1)
        self.accepted += 1  # not the bar's count: a disabled bar (progress=False) counts nothing
        if self.on_progress is not None:
            self.on_progress(self.accepted, len(self.todo))
        self.commit()

    def commit(self, everything: bool = False) -> None:
        """Record the records whose turn has come, in to-do order; `everything`: those out of turn too (a batch
        cut short by an error or a second Ctrl-C). Saves when SAVE_EVERY seconds have passed."""
        while self._committed in self._waiting:
            self._record(self._waiting.pop(self._committed))
            self._committed += 1
        if everything:
            for p in sorted(self._waiting):
                self._record(self._waiting.pop(p))
        if time.monotonic() - self._last_save > SAVE_EVERY:
            self.save()

    def _record(self, record: TargetRecord | None) -> None:
        if record is None:
            return
        self.manifest.record(self.fingerprint, record)
        self.labeled += record.status == "labeled"
        self.failed += record.status == "failed"

    def save(self) -> None:
        save_records(self.folder, self.manifest, self.targets, self.classes)
        self._last_save = time.monotonic()

    def summary(self, object_ids: list[int]) -> BatchSummary:
        """The batch's summary; present: per object ID, on how many targets it is present now."""
        counts = ResultsTable(self.classes, self.manifest.records(self.targets)).present_counts()
        return BatchSummary(
            targets=len(self.targets),
            labeled=self.labeled,
            skipped=len(self.targets) - len(self.todo) + len(self.reviewed & set(self.todo)),
            reviewed=len(self.reviewed),
            failed=self.failed,
            present={k: counts.get(k, 0) for k in object_ids},
            seconds=time.perf_counter() - self.start,
            interrupted=self.interrupted,
        )
