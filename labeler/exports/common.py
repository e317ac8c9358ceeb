"""What the export formats share: object masks read back from the output folder."""

from __future__ import annotations

import logging

from ..outputs.folder import OutputFolder, TargetRecord

log = logging.getLogger(__name__)


def read_id_mask(folder: OutputFolder, item: TargetRecord, obj_id: int):
    """(H, W) bool mask of one object, or None (with a warning) when it can't be read."""
    mask = folder.read_id_mask(item.stem, obj_id)
    if mask is None:
        log.warning("export: %s is missing or unreadable; object %d of %s is left out",
                    folder.id_mask(item.stem, obj_id), obj_id, item.stem)
    return mask
