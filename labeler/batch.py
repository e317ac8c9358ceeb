"""Running a batch: targets are read ahead, labeled one at a time, and written behind.

Usage: `summary = run_batch(labeler, list_images("targets"), Path("output"), classes)`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .engine import Labeler
from .images import ImageReadError, read_rgb
from .writers import ResultsTable, TargetWriter

log = logging.getLogger(__name__)
PREFETCH = 2  # targets decoded ahead of the model; also the most writes left pending


@dataclass
class BatchSummary:
    """What a run did: counts, per-ID presence, time."""

    targets: int
    labeled: int
    failed: int
    present: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.labeled / self.seconds if self.seconds > 0 else 0.0
        found = ", ".join(f"ID {k}: {n}" for k, n in sorted(self.present.items())) or "none"
        return (
            f"{self.targets} targets: {self.labeled} labeled, {self.failed} failed; "
            f"objects found on ({found}); {self.seconds:.1f} s, {rate:.2f} images/s"
        )


def output_stems(targets: list[Path]) -> list[str]:
    """Output name of each target: its stem, or stem_ext where two targets share a stem (a.jpg, a.png)."""
    counts = Counter(p.stem for p in targets)
    return [p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in targets]


def run_batch(
    labeler: Labeler,
    targets: list[Path],
    output_dir: Path,
    classes: dict[int, str],
    progress: bool = True,
) -> BatchSummary:
    """Label every target, write its files under `output_dir`, and results.csv at the end."""
    start = time.perf_counter()
    writer = TargetWriter(output_dir, classes)
    table = ResultsTable(classes)
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(1, "read") as reader, ThreadPoolExecutor(1, "write") as writes, logging_redirect_tqdm():
        reads = deque(reader.submit(read_rgb, p) for p in targets[:PREFETCH])
        bar = tqdm(zip(targets, output_stems(targets)), total=len(targets), unit="img", disable=not progress)
        for i, (path, stem) in enumerate(bar):
            if i + PREFETCH < len(targets):
                reads.append(reader.submit(read_rgb, targets[i + PREFETCH]))
            try:
                rgb = reads.popleft().result()
            except ImageReadError as e:
                log.error("skipped %s", e)
                table.add_failure(path.name, str(e).removeprefix(f"{path}: "))
                continue
            detections = labeler.label(rgb)
            table.add_target(path.name, detections)
            pending.append(writes.submit(writer.write, stem, rgb, detections))
            while len(pending) > PREFETCH:
                pending.popleft().result()
        for f in pending:
            f.result()
    table.write(output_dir / "results.csv")
    present = table.present_counts()
    return BatchSummary(
        targets=len(targets),
        labeled=len(targets) - table.failures,
        failed=table.failures,
        present={k: present.get(k, 0) for k in labeler.object_ids},
        seconds=time.perf_counter() - start,
    )
