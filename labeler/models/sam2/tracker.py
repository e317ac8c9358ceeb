"""The labeling core: guided references become SAM 2 conditioning frames, targets are tracked after them.

The references are frames 0..K-1 of a pseudo-video kept inside a `SAM2VideoPredictor`
inference state, prompted and tracked with the predictor's own methods in the order
`add_new_points_or_box` / `add_new_mask` / `propagate_in_video` use them (`internals`). In
`chain` mode the targets follow the same way; in `refs` mode each target runs against the fixed
reference memories, doing once what doesn't change from target to target. Either way a target's
result equals what SAM 2 gives on a JPEG folder [ref_1 … ref_K, target(s)] (tests/models/sam2/test_fidelity.py).

Built by `Sam2Backend.condition` and `Sam2Backend.preview` (models/sam2/backend.py).

Usage:
    labeler = Sam2TargetLabeler(backend, prompts, memory="refs")
    detections = labeler.label(read_rgb("target.jpg"))   # one Detection per object ID
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from PIL import Image

from ...prompts.prompt_set import PromptSet
from ...types.detections import Detection
from ...types.guides import ObjectGuides, compose_mask
from ...utils.hashing import content_hash
from ...utils.images import read_rgb
from ..backend import MEMORY_MODES, encode
from ..common import ObjectOutput, detections
from . import internals

# SAM 2's frame loader normalises with ImageNet statistics: float64 x / 255, then float32 (x - mean) / std.
# Those are 256 values per channel, so they are looked up: the same bits (tests/models/sam2/test_fidelity.py), a
# third of the time.
_MEAN = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None]
_STD = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None]
_NORMALISED = ((torch.from_numpy(np.arange(256) / 255.0).float()[None] - _MEAN) / _STD).numpy()  # (3, 256)


def to_model_input(rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, S, S) float32, resized and normalised exactly as SAM 2's frame loader does."""
    resized = np.asarray(Image.fromarray(rgb).resize((image_size, image_size), Image.BICUBIC))
    return torch.from_numpy(np.stack([_NORMALISED[c].take(resized[..., c]) for c in range(3)]))


def _condition(predictor, state: dict, frame_idx: int, obj: ObjectGuides, height: int, width: int) -> np.ndarray:
    """Prompt frame `frame_idx` with one object's guides; returns the (H, W) bool mask it is conditioned on.

    Box and points are SAM 2's box/point prompt. With brush strokes, SAM 2's mask from the
    box/points (empty without them), plus painted, minus erased pixels becomes the mask prompt.
    """
    internals.set_frame_size(state, height, width)
    mask = np.zeros((height, width), dtype=bool)
    if obj.absent:  # an explicit empty mask prompt: SAM 2 learns the object is not there
        predictor.add_new_mask(state, frame_idx, obj.id, torch.from_numpy(mask))
        return mask
    if obj.has_prompt:
        scale = np.array([width, height], dtype=np.float32)
        points = labels = box = None
        if obj.points:
            points = np.asarray(obj.points, dtype=np.float32) / scale
            labels = np.asarray(obj.labels, dtype=np.int32)
        if obj.box is not None:
            box = np.asarray(obj.box, dtype=np.float32).reshape(2, 2) / scale
        logits = internals.prompt_frame(predictor, state, frame_idx, obj.id, points=points, labels=labels, box=box)
        mask = (logits > 0).cpu().numpy()
    if obj.paint is None and obj.erase is None:
        return mask
    mask = compose_mask(mask, obj)
    predictor.add_new_mask(state, frame_idx, obj.id, torch.from_numpy(mask))
    return mask


def _autocast(precision: str, device: torch.device):
    """bfloat16 autocast on the device for "bf16" (the backend's resolved precision), full precision for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Sam2TargetLabeler:
    """SAM 2 conditioned on guided references; labels targets (several per forward in refs mode).

    memory="refs": every target is frame K right after the K references and attends to the
    reference memories only, so its labels don't depend on other targets.
    memory="chain": targets are frames K, K+1, … of one pseudo-video (pass `num_targets`),
    with SAM 2's memory of recent frames; call `label` in order.
    features: a `FeatureCache`: images whose content hash it holds skip the image encoder.
    """

    def __init__(
        self,
        backend,
        prompts: PromptSet,
        memory: str = "refs",
        threshold: float = 0.0,
        num_targets: int | None = None,
        features=None,
    ):
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory mode {memory!r}: choose from {MEMORY_MODES}")
        if memory == "chain" and not num_targets:
            raise ValueError("chain mode needs num_targets (the pseudo-video's length)")
        self.backend = backend
        self.predictor = predictor = backend.predictor
        self.precision = backend.precision
        self.features = features
        self.memory = memory
        self.threshold = threshold
        self.classes = dict(prompts.classes)
        self.references = [r for r in prompts.references if r.objects]
        num_refs = len(self.references)
        self._num_frames = num_refs + (1 if memory == "refs" else num_targets)
        self._state = internals.new_state(predictor, self._num_frames)
        self._next_frame = num_refs
        with torch.inference_mode(), _autocast(backend.precision, predictor.device):
            self._condition_on_references()
            # refs mode: the reference memories are fixed, so they are assembled and projected once.
            self._groups = internals.build_groups(predictor, self._state, num_refs) if memory == "refs" else None

    @property
    def object_ids(self) -> list[int]:
        return internals.object_ids(self._state)

    def _condition_on_references(self) -> None:
        state, predictor = self._state, self.predictor
        for k, ref in enumerate(self.references):
            hashes = [content_hash(ref.image)] if self.features is not None else None
            internals.encode_frame(state, k, encode(self.backend, [read_rgb(ref.image)], self.features, hashes))
        for k, ref in enumerate(self.references):
            for obj in ref.objects:
                _condition(predictor, state, k, obj, ref.height, ref.width)
        # Encode the conditioning memories, then track every object through the references it
        # is not guided on, exactly as `propagate_in_video` does before reaching the targets.
        internals.encode_prompt_memories(predictor, state)
        for k in range(internals.condition_frames(state)[0], len(self.references)):
            internals.track_frame(predictor, state, k)
        internals.forget_frame_features(state)

    def predict_many(self, rgbs: list[np.ndarray], image_hashes: list[str] | None = None,
                     inputs: list[torch.Tensor] | None = None) -> list[dict[int, ObjectOutput]]:
        """SAM 2's raw outputs on targets ((H, W, 3) uint8 RGB), per object ID; several at once in refs mode.

        image_hashes: the targets' content hashes (`hashing.content_hash` of their files), which
        key the feature cache; without them the encoder runs. inputs: their `backend.prepare`, made
        ahead (by a reading thread); without them they are made here.
        """
        if self.memory == "chain" or not rgbs:
            hashes, inputs = image_hashes or [None] * len(rgbs), inputs or [None] * len(rgbs)
            return [self._predict_chain(rgb, h, x) for rgb, h, x in zip(rgbs, hashes, inputs)]
        with torch.inference_mode(), _autocast(self.precision, self.predictor.device):
            backbone_out = encode(self.backend, rgbs, self.features, image_hashes, inputs)
            results = internals.track_targets(self.predictor, backbone_out, self._groups)
        return [
            {obj_id: ObjectOutput(results[obj_id][0][t : t + 1], float(results[obj_id][1][t])) for obj_id in self.object_ids}
            for t in range(len(rgbs))
        ]

    def predict(self, rgb: np.ndarray) -> dict[int, ObjectOutput]:
        """SAM 2's raw outputs on one target, per object ID."""
        return self.predict_many([rgb])[0]

    def _predict_chain(self, rgb: np.ndarray, image_hash: str | None, model_input) -> dict[int, ObjectOutput]:
        state, frame_idx = self._state, self._next_frame
        if frame_idx >= self._num_frames:
            raise RuntimeError(f"chain mode was set up for {self._num_frames} frames")
        with torch.inference_mode(), _autocast(self.precision, self.predictor.device):
            internals.forget_frame_features(state)
            hashes = [image_hash] if image_hash is not None else None
            inputs = [model_input] if model_input is not None else None
            internals.encode_frame(state, frame_idx, encode(self.backend, [rgb], self.features, hashes, inputs))
            outputs = internals.track_frame(self.predictor, state, frame_idx)
            internals.forget_frame_features(state)
        internals.forget_old_frames(self.predictor, state, frame_idx)
        self._next_frame += 1
        return {obj_id: ObjectOutput(*out) for obj_id, out in outputs.items()}

    def label_many(self, rgbs: list[np.ndarray], image_hashes: list[str] | None = None,
                   inputs: list[torch.Tensor] | None = None) -> list[list[Detection]]:
        """One `Detection` per object ID for each target, masks at each target's own size (image_hashes,
        inputs: as `predict_many`)."""
        outputs = self.predict_many(rgbs, image_hashes, inputs)
        return [detections(rgb, out, self.threshold, self.classes) for rgb, out in zip(rgbs, outputs)]

    def label(self, rgb: np.ndarray) -> list[Detection]:
        """One `Detection` per object ID on one target, masks at the target's own size."""
        return self.label_many([rgb])[0]


class ReferencePreview:
    """The mask one object's guides condition the batch on, for a live preview of one reference.

    The image is encoded once; each `mask` call runs only the prompt encoder and mask decoder.
    Usage: `ReferencePreview(backend, rgb).mask(ObjectGuides(1, box=(10, 10, 80, 60)))`.
    """

    def __init__(self, backend, rgb: np.ndarray):
        self.predictor = predictor = backend.predictor
        self.precision = backend.precision
        self._size = rgb.shape[:2]
        self._state = internals.new_state(predictor, num_frames=1)
        with torch.inference_mode(), _autocast(backend.precision, predictor.device):
            internals.encode_frame(self._state, 0, encode(backend, [rgb]))

    def mask(self, obj: ObjectGuides) -> np.ndarray:
        """(H, W) bool mask, identical to the one the batch conditions object `obj.id` on."""
        with torch.inference_mode(), _autocast(self.precision, self.predictor.device):
            # Start from a blank frame, as the batch does: no earlier mask feeds the decoder.
            internals.clear_object_on_frame(self.predictor, self._state, 0, obj.id)
            return _condition(self.predictor, self._state, 0, obj, *self._size)
