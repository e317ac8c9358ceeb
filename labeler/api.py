"""The labeler in code: SAM 2 conditioned on guided references, labeling paths, PIL images or arrays.

Usage:
    lab = Labeler.from_pretrained("output/prompts.json", checkpoint="none", image_size=256)
    result = lab.label("targets/t1.jpg")
    result.detections[0].mask        # (H, W) bool, in pixels of the upright image
    for result in lab.label_many(paths, batch_size=4): ...
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import defaults
from .errors import UsageError
from .models.backend import MEMORY_MODES, ModelSettings
from .prompts.prompt_set import PromptSet, as_prompt_set
from .types.detections import Detection
from .utils.hashing import content_hash
from .utils.images import ImageReadError, pil_to_rgb, read_rgb


@dataclass
class LabelResult:
    """What the labeler found on one image.

    Attributes:
        source: the path labeled, or None for an image or array given in memory.
        size: (height, width) of the upright image.
        detections: one `Detection` per object ID, in ID order (empty when `error` is set).
        error: why the image could not be read, or None.
    """

    source: Path | None
    size: tuple[int, int]
    detections: list[Detection] = field(default_factory=list)
    error: str | None = None

    def label_map(self) -> np.ndarray:
        """(H, W) uint8 map, pixel = object ID, 0 background (where masks overlap the higher logit wins);
        equal to the batch's labels/<stem>.png."""
        from .outputs.writers import label_map

        return label_map(self.size, self.detections)


def _rgb(image) -> np.ndarray:
    """A path, a PIL image (EXIF-transposed) or an (H, W, 3) uint8 RGB array, as an (H, W, 3) uint8 array."""
    if isinstance(image, (str, os.PathLike)):
        return read_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageReadError(f"expected an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}")
        return np.ascontiguousarray(image)
    if hasattr(image, "getexif") and hasattr(image, "convert"):  # a PIL image
        return pil_to_rgb(image)
    raise ImageReadError(f"expected a path, a PIL image or an (H, W, 3) uint8 array, got {type(image).__name__}")


class Labeler:
    """SAM 2 conditioned on a `PromptSet`'s references; labels targets one by one or several per forward.

    memory="refs": each target is labeled as the frame right after the references (targets are
    independent). memory="chain": the images of one `label_many` call form a pseudo-video after the
    references, with SAM 2's memory of recent frames.
    """

    def __init__(self, predictor, prompts: PromptSet, memory: str = defaults.MEMORY,
                 threshold: float = defaults.THRESHOLD, features=None):
        """predictor: a model backend (`models.backend.ModelBackend`), or a SAM 2 predictor."""
        if memory not in MEMORY_MODES:
            raise UsageError(f"memory mode {memory!r}: choose refs or chain")
        if not hasattr(predictor, "condition"):  # a SAM 2 predictor, as this took before backends
            from .models.sam2.backend import Sam2Backend

            # Its weights' file is unknown here; the feature cache passed in carries its own key.
            predictor = Sam2Backend(ModelSettings(checkpoint="none", image_size=predictor.image_size),
                                    predictor=predictor)
        self.backend, self.prompts, self.memory, self.threshold = predictor, prompts, memory, threshold
        self.features = features  # a FeatureCache: images given as paths skip the encoder when it holds them
        self._core = predictor.condition(prompts, "refs", threshold, features=features) if memory == "refs" else None

    @classmethod
    def from_pretrained(
        cls,
        prompts: PromptSet | str | os.PathLike,
        model: str = defaults.MODEL,
        checkpoint: str | os.PathLike | None = defaults.CHECKPOINT,
        image_size: int | None = defaults.IMAGE_SIZE,
        device: str = defaults.DEVICE,
        precision: str = defaults.PRECISION,
        memory: str = defaults.MEMORY,
        threshold: float = defaults.THRESHOLD,
        cache: str | os.PathLike | bool | None = defaults.CACHE,
        cache_size_gb: float = defaults.CACHE_SIZE_GB,
    ) -> Labeler:
        """Build SAM 2.1 `model` from a local checkpoint and condition it on `prompts` (a PromptSet or a path).

        checkpoint: a file, None for checkpoints/sam2.1_hiera_<model>.pt, or "none" for untrained
        weights (tests only). Nothing is downloaded: a missing checkpoint raises UsageError naming
        `python main.py download`. image_size: the model's input size (None: 1024). device: auto,
        cpu, cuda or mps. precision: auto, bf16 or fp32; auto is bfloat16 autocast on CUDA and on CPUs with
        native bf16 (AMX-BF16, AVX512-BF16), float32 elsewhere (the Labeler's `backend.precision` says which runs).
        cache, cache_size_gb: the feature cache, as `label_batch`'s (images given as paths whose features it
        holds skip the image encoder).
        """
        from .batch.feature_cache import feature_cache_for
        from .models.backend import build_backend
        from .models.common import resolve_device

        prompts = as_prompt_set(prompts)
        if memory not in MEMORY_MODES:
            raise UsageError(f"memory mode {memory!r}: choose refs or chain")
        backend = build_backend(ModelSettings(model, checkpoint, image_size, resolve_device(device).type, precision))
        features = feature_cache_for(cache, cache_size_gb, backend)
        return cls(backend, prompts, memory=memory, threshold=threshold, features=features)

    @property
    def object_ids(self) -> list[int]:
        """The object IDs guided on the references, sorted."""
        return self.prompts.object_ids

    def label(self, image) -> LabelResult:
        """One image (a path, a PIL image or an (H, W, 3) uint8 RGB array); raises ImageReadError if unreadable."""
        result = next(self.label_many([image]))
        if result.error is not None:
            raise ImageReadError(result.error)
        return result

    def label_many(self, images: Iterable, batch_size: int = 1) -> Iterator[LabelResult]:
        """Results in input order, `batch_size` images per forward (refs mode); an image that can't be read
        gives a result with `error` set, and the stream goes on. In chain mode the images are one chain."""
        if self.memory == "chain":
            images = list(images)
            core = self.backend.condition(self.prompts, "chain", self.threshold, len(images), self.features)
            batch_size = 1
        else:
            core = self._core
        chunk: list = []
        for image in images:
            chunk.append(image)
            if len(chunk) == batch_size:
                yield from self._label_chunk(core, chunk)
                chunk = []
        if chunk:
            yield from self._label_chunk(core, chunk)

    def _label_chunk(self, core, images: list) -> list[LabelResult]:
        results, readable = [], []
        for image in images:
            source = Path(image) if isinstance(image, (str, os.PathLike)) else None
            try:
                rgb = _rgb(image)
            except ImageReadError as e:
                results.append(LabelResult(source, (0, 0), error=str(e)))
                continue
            results.append(LabelResult(source, rgb.shape[:2]))
            readable.append((results[-1], rgb))
        sources = [r.source for r, _ in readable]
        hashes = [content_hash(p) for p in sources] if self.features and None not in sources else None
        for result, detections in zip([r for r, _ in readable], core.label_many([rgb for _, rgb in readable], hashes)):
            result.detections = sorted(detections, key=lambda d: d.id)
        return results
