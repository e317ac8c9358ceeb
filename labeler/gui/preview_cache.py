"""SAM 2's live masks on one image: one per object ID, recomputed only when its box or points change.

Usage:
    masks = PreviewCache(encoder.submit(backend.preview, rgb))   # or a Preview, or None (no model)
    mask = masks.mask(obj, state.prompt_revision(obj.id))         # None while the embedding is computed
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from ..models.backend import Preview
from ..types.guides import ObjectGuides


class PreviewCache:
    """The masks a `Preview` gives for each object's box and points, kept per object ID and prompt revision.

    source: a `Preview`, a Future of one (the image embedding computed on a thread), or None: no model,
    no masks.
    """

    def __init__(self, source: Future | Preview | None):
        self.source = source
        self._masks: dict[int, tuple[int, np.ndarray]] = {}  # id -> (prompt revision, mask)

    @property
    def ready(self) -> bool:
        """Whether masks can be had now (the embedding is computed, or there is nothing to wait for)."""
        return not isinstance(self.source, Future) or self.source.done()

    def wait(self) -> None:
        """Block until the image embedding is computed."""
        if isinstance(self.source, Future):
            self.source.result()

    def mask(self, obj: ObjectGuides, revision: int) -> np.ndarray | None:
        """(H, W) bool: SAM 2's mask of `obj`'s box and points at prompt `revision`; None while not ready."""
        cached = self._masks.get(obj.id)
        if cached is not None and cached[0] == revision:
            return cached[1]
        if self.source is None or not self.ready:
            return None
        preview = self.source.result() if isinstance(self.source, Future) else self.source
        mask = preview.mask(ObjectGuides(obj.id, box=obj.box, points=list(obj.points), labels=list(obj.labels)))
        self._masks[obj.id] = (revision, mask)
        return mask
