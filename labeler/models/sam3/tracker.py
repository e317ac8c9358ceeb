"""The labeling core on SAM 3: guided references become conditioning frames of SAM 3's tracker, targets follow.

As with SAM 2 (models/sam2/tracker.py), the references are frames 0..K-1 of a pseudo-video, prompted and
tracked with `Sam3TrackerPredictor`'s own methods (`add_new_points_or_box`, `add_new_mask`,
`propagate_in_video`); the image features are made by the backend (and the feature cache) and put into the
inference state, not loaded from a folder.

**Objects are independent**, as in the SAM 2 backend: each object has an inference state of its own over the
shared image features, so it is conditioned only on the references it is guided on and tracked exactly as
SAM 3's predictor tracks that object alone. (SAM 3 run with all objects in one state couples them: memories
are encoded under a non-overlap constraint, an object is conditioned as absent on a reference where another
is guided and it isn't, and no object can be added once tracking started.)

refs mode: every target is frame K, right after the references, tracked without leaving a memory behind, so
its result is SAM 3's on the JPEG folder [ref_1 … ref_K, target]. chain mode: targets are frames K, K+1, …
of one pseudo-video, SAM 3's on [ref_1 … ref_K, t_1 … t_N]. tests/models/sam3/test_sam3_fidelity.py compares
raw logits with `Sam3TrackerPredictor` on such folders.

SAM 3 attends only the 4 conditioning frames nearest the frame it tracks (`max_cond_frames_in_attn`): with
more than 4 guided references, an object's last 4 guided references condition a target (docs/sam3.md).
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

# Normalisation: mean 0.5, std 0.5 per channel, not ImageNet's statistics. The sam3 0.1.4 wheel's frame
# loader (`sam3/model/utils/sam2_utils.py: load_video_frames`) still defaults to ImageNet's, copied from
# SAM 2; SAM 3's GitHub source switched it to 0.5/0.5 in commit 1daff5e (issues #202, #229), and that is
# what the released sam3.pt was trained and is served with: the tracker reads the features of the same
# ViT as the detector (one `detector.backbone` in the checkpoint), and every other path into that ViT
# normalises with 0.5/0.5 — the video model (`build_sam3_video_model(image_mean=(0.5,)*3, image_std=...)`),
# the image processor (`Sam3Processor`: `Normalize(mean=[0.5]*3, std=[0.5]*3)`) and every training and
# evaluation config (`train_norm_mean`/`val_norm_mean: [0.5, 0.5, 0.5]`).
# Computed as SAM 3's loader does, float64 x / 255, then float32 (x - 0.5) / 0.5: 256 values per channel,
# so they are looked up.
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
_MEAN = torch.tensor(MEAN, dtype=torch.float32)[:, None]
_STD = torch.tensor(STD, dtype=torch.float32)[:, None]
_NORMALISED = ((torch.from_numpy(np.arange(256) / 255.0).float()[None] - _MEAN) / _STD).numpy()  # (3, 256)


def to_model_input(rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, S, S) float32, resized and normalised as SAM 3's frame loader does (0.5/0.5)."""
    resized = np.asarray(Image.fromarray(rgb).resize((image_size, image_size), Image.BICUBIC))
    return torch.from_numpy(np.stack([_NORMALISED[c].take(resized[..., c]) for c in range(3)]))


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def running(precision: str, device: torch.device):
    """Around every call into SAM 3: inference mode, the run's precision, torch's global switches kept."""
    with internals.contained(), torch.inference_mode(), _autocast(precision, device):
        yield


def _condition(predictor, state: dict, frame_idx: int, obj: ObjectGuides, height: int, width: int) -> np.ndarray:
    """Prompt frame `frame_idx` with one object's guides; returns the (H, W) bool mask it is conditioned on.

    Box and points are SAM 3's box/point prompt; with brush strokes, SAM 3's mask of the box/points (empty
    without them), plus painted, minus erased pixels becomes the mask prompt. Absent: an empty mask prompt.
    """
    internals.set_frame_size(state, height, width)
    mask = np.zeros((height, width), dtype=bool)
    if obj.absent:
        internals.prompt_mask(predictor, state, frame_idx, obj.id, torch.from_numpy(mask))
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
    internals.prompt_mask(predictor, state, frame_idx, obj.id, torch.from_numpy(mask))
    return mask


class Sam3TargetLabeler:
    """SAM 3's tracker conditioned on guided references, one inference state per object; labels targets.

    memory, threshold, num_targets, features: as `Sam2TargetLabeler` (models/sam2/tracker.py).
    """

    def __init__(self, backend, prompts: PromptSet, memory: str = "refs", threshold: float = 0.0,
                 num_targets: int | None = None, features=None):
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory mode {memory!r}: choose from {MEMORY_MODES}")
        if memory == "chain" and not num_targets:
            raise ValueError("chain mode needs num_targets (the pseudo-video's length)")
        self.backend = backend
        self.predictor = backend.predictor
        self.precision = backend.precision
        self.features = features
        self.memory = memory
        self.threshold = threshold
        self.classes = dict(prompts.classes)
        self.references = [r for r in prompts.references if r.objects]
        self._num_refs = len(self.references)
        self._num_frames = self._num_refs + (1 if memory == "refs" else num_targets)
        self._next_frame = self._num_refs
        self._cache: dict = {}  # frame -> image features, shared by every object's state
        self._states: dict[int, dict] = {}
        with running(self.precision, self.predictor.device):
            self._condition_on_references()

    @property
    def object_ids(self) -> list[int]:
        return list(self._states)

    def _condition_on_references(self) -> None:
        predictor = self.predictor
        for k, ref in enumerate(self.references):
            hashes = [content_hash(ref.image)] if self.features is not None else None
            internals.encode_frame(self._cache, k, encode(self.backend, [read_rgb(ref.image)], self.features, hashes))
        ids = sorted({obj.id for ref in self.references for obj in ref.objects})
        for obj_id in ids:
            state = self._states[obj_id] = internals.new_state(predictor, self._num_frames, self._cache)
            for k, ref in enumerate(self.references):
                for obj in ref.objects:
                    if obj.id == obj_id:
                        _condition(predictor, state, k, obj, ref.height, ref.width)
            # Encode the conditioning memories, then track the object through the references after its first
            # guided one that it is not guided on, as `propagate_in_video` does before reaching the targets.
            internals.encode_prompt_memories(predictor, state)
            internals.propagate(predictor, state, internals.condition_frames(state)[0], self._num_refs - 1)
        self._cache.clear()

    def predict_many(self, rgbs: list[np.ndarray], image_hashes: list[str] | None = None,
                     inputs: list[torch.Tensor] | None = None) -> list[dict[int, ObjectOutput]]:
        """SAM 3's raw outputs on targets, per object ID (image_hashes, inputs: as `Sam2TargetLabeler.predict_many`)."""
        if self.memory == "chain" or not rgbs:
            hashes, inputs = image_hashes or [None] * len(rgbs), inputs or [None] * len(rgbs)
            return [self._predict_chain(rgb, h, x) for rgb, h, x in zip(rgbs, hashes, inputs)]
        frame = self._num_refs
        results = []
        with running(self.precision, self.predictor.device):
            backbone_out = encode(self.backend, rgbs, self.features, image_hashes, inputs)
            for one in internals.split_backbone_output(backbone_out):
                internals.encode_frame(self._cache, frame, one)
                outputs = {}
                for obj_id, state in self._states.items():
                    out = internals.propagate(self.predictor, state, frame, frame, run_mem_encoder=False)
                    logits, score = out[frame]
                    internals.forget_frame_output(state, frame)
                    outputs[obj_id] = ObjectOutput(logits, score)
                results.append(outputs)
            self._cache.clear()
        return results

    def predict(self, rgb: np.ndarray) -> dict[int, ObjectOutput]:
        return self.predict_many([rgb])[0]

    def _predict_chain(self, rgb: np.ndarray, image_hash: str | None, model_input) -> dict[int, ObjectOutput]:
        frame = self._next_frame
        if frame >= self._num_frames:
            raise RuntimeError(f"chain mode was set up for {self._num_frames} frames")
        outputs = {}
        with running(self.precision, self.predictor.device):
            hashes = [image_hash] if image_hash is not None else None
            inputs = [model_input] if model_input is not None else None
            internals.encode_frame(self._cache, frame, encode(self.backend, [rgb], self.features, hashes, inputs))
            for obj_id, state in self._states.items():
                outputs[obj_id] = ObjectOutput(*internals.propagate(self.predictor, state, frame, frame)[frame])
                internals.forget_old_frames(self.predictor, state, frame)
            self._cache.clear()
        self._next_frame += 1
        return outputs

    def label_many(self, rgbs: list[np.ndarray], image_hashes: list[str] | None = None,
                   inputs: list[torch.Tensor] | None = None) -> list[list[Detection]]:
        outputs = self.predict_many(rgbs, image_hashes, inputs)
        return [detections(rgb, out, self.threshold, self.classes) for rgb, out in zip(rgbs, outputs)]

    def label(self, rgb: np.ndarray) -> list[Detection]:
        return self.label_many([rgb])[0]


class ReferencePreview:
    """The mask one object's guides condition the batch on, for a live preview of one reference.

    The image is encoded once; each `mask` call prompts a fresh one-frame state (SAM 3's prompt encoder and
    mask decoder only), as the batch prompts the object's own state.
    """

    def __init__(self, backend, rgb: np.ndarray):
        self.predictor = backend.predictor
        self.precision = backend.precision
        self._size = rgb.shape[:2]
        self._cache: dict = {}
        with running(self.precision, self.predictor.device):
            internals.encode_frame(self._cache, 0, encode(backend, [rgb]))

    def mask(self, obj: ObjectGuides) -> np.ndarray:
        with running(self.precision, self.predictor.device):
            state = internals.new_state(self.predictor, 1, self._cache)
            return _condition(self.predictor, state, 0, obj, *self._size)
