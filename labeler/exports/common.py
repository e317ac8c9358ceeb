"""What the export formats share: the object IDs, and object masks read back from the output folder."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..output_folder import OutputFolder, TargetRecord

log = logging.getLogger(__name__)


def all_object_ids(items: list[TargetRecord], object_ids: Iterable[int] | None = None) -> list[int]:
    """The prompts' object IDs (`object_ids`) and every ID in the records, sorted."""
    return sorted(set(object_ids or ()) | {o.id for item in items for o in item.objects})


def read_id_mask(folder: OutputFolder, item: TargetRecord, obj_id: int):
    """(H, W) bool mask of one object, or None (with a warning) when it can't be read."""
    mask = folder.read_id_mask(item.stem, obj_id)
    if mask is None:
        log.warning("export: %s is missing or unreadable; object %d of %s is left out",
                    folder.id_mask(item.stem, obj_id), obj_id, item.stem)
    return mask
