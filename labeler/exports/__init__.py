"""Dataset exports (COCO, YOLO), built after a batch from what the output folder holds.

Nothing is kept in memory during the batch: the manifest says which targets are labeled and gives
their records (object IDs, logits), and each object's mask is read back from
`id_masks/<stem>_id<k>.png`, one at a time. So a resumed run exports every target labeled so far
with the current settings, not only those labeled by this run.

A format is a module of this package with a `write(export: Export) -> Path` function, named in
FORMATS: adding one is that module and its entry (docs/architecture.md).

Usage:
    write_exports(Path("output"), targets, {1: "disc"}, ["coco", "yolo"], object_ids=[1, 2])
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..outputs.folder import OutputFolder, TargetRecord, all_object_ids

log = logging.getLogger(__name__)
# --formats name -> the module of this package that writes it (imported only when asked for).
FORMATS = {"coco": "coco", "yolo": "yolo"}


@dataclass(frozen=True)
class Export:
    """What every format writes from: the folder, its labeled targets' records, the class names, all object
    IDs (sorted; YOLO's class index is the position), the targets' folder and the YOLO validation fraction."""

    folder: OutputFolder
    items: list[TargetRecord]
    classes: dict[int, str]
    object_ids: list[int]
    image_dir: Path | None
    yolo_val: float


def parse_formats(value: str | Iterable[str] | None) -> list[str]:
    """`"coco,yolo"` (or a list of names, as config.py's FORMATS) -> ["coco", "yolo"]; ValueError for unknown names.

    Usage: `parse_formats("yolo, coco")` -> ["yolo", "coco"]; `parse_formats("")` -> [].
    """
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for name in names:
        name = str(name).strip().lower()
        if not name:
            continue
        if name not in FORMATS:
            raise ValueError(f"unknown export format {name!r} (--formats takes a comma list of {', '.join(FORMATS)})")
        if name not in out:
            out.append(name)
    return out


def write_exports(
    output_dir: str | os.PathLike,
    targets: list[Path],
    classes: dict[int, str],
    formats: str | Iterable[str] | None,
    object_ids: Iterable[int] | None = None,
    yolo_val: float = 0.1,
    reviewed_only: bool = False,
) -> list[Path]:
    """Write each requested format for every labeled target; returns the paths written.

    `object_ids`: all object IDs of the prompts (categories, and YOLO class index = position in the
    sorted list); by default the IDs found in the manifest records. `yolo_val`: the fraction of images
    the YOLO export lists for validation. `reviewed_only`: only targets a person accepted or corrected
    (a clean training set); excluded targets are always left out.
    """
    formats = parse_formats(formats)
    if not formats:
        return []
    folder = OutputFolder(output_dir)
    items = folder.labeled(targets, reviewed_only)
    export = Export(folder, items, classes, all_object_ids(items, object_ids), targets[0].parent if targets else None,
                    yolo_val)
    return [importlib.import_module(f".{FORMATS[name]}", __name__).write(export) for name in formats]


def formats_arg(text: str) -> list[str]:
    """argparse `type` of --formats: `parse_formats`, its error shown as the option's error."""
    import argparse

    try:
        return parse_formats(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
