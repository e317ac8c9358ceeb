"""The labeling core: guided references become SAM 2 conditioning frames, targets are tracked after them.

The references are frames 0..K-1 of a pseudo-video kept inside a `SAM2VideoPredictor`
inference state. They are prompted and tracked with the predictor's own methods, in the order
`add_new_points_or_box` / `add_new_mask` / `propagate_in_video` use them. In `chain` mode the
targets follow the same way; in `refs` mode `refs_memory` runs each target against the fixed
reference memories, doing once what doesn't change from target to target. Either way a target's
result equals what SAM 2 gives on a JPEG folder [ref_1 … ref_K, target(s)] (tests/test_fidelity.py).

Usage:
    labeler = Labeler(predictor, prompts, memory="refs")
    detections = labeler.label(read_rgb("target.jpg"))   # one Detection per object ID
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .detections import Detection
from .images import read_rgb
from .prompts import ObjectGuides, PromptSet
from .refs_memory import build_groups, track_targets

MEMORY_MODES = ("refs", "chain")
# SAM 2's frame loader normalises with ImageNet statistics.
_MEAN = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
_STD = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]


def to_model_input(rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, S, S) float32, resized and normalised exactly as SAM 2's frame loader does."""
    resized = np.asarray(Image.fromarray(rgb).resize((image_size, image_size), Image.BICUBIC))
    image = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
    image -= _MEAN
    image /= _STD
    return image


def _new_state(predictor, num_frames: int) -> dict:
    """An empty inference state with the fields `SAM2VideoPredictor.init_state` creates.

    Frames are not loaded from a folder: their backbone features are put into
    `cached_features` by the caller, one target at a time.
    """
    device = predictor.device
    return {
        "images": None, "num_frames": num_frames,
        "offload_video_to_cpu": False, "offload_state_to_cpu": False,
        "video_height": None, "video_width": None,
        "device": device, "storage_device": device,
        "point_inputs_per_obj": {}, "mask_inputs_per_obj": {},
        "cached_features": {}, "constants": {},
        "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
        "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {},
    }


def _encode(predictor, state: dict, frame_idx: int, rgb: np.ndarray) -> None:
    """Run the image encoder on `rgb` and cache its features as frame `frame_idx` (as `_get_image_feature` does)."""
    image = to_model_input(rgb, predictor.image_size).to(predictor.device).unsqueeze(0)
    state["cached_features"][frame_idx] = (image, predictor.forward_image(image))


def _condition(predictor, state: dict, frame_idx: int, obj: ObjectGuides) -> np.ndarray:
    """Prompt frame `frame_idx` with one object's guides; returns the (H, W) bool mask it is conditioned on.

    Box and points are SAM 2's box/point prompt. With brush strokes, SAM 2's mask from the
    box/points (empty without them), plus painted, minus erased pixels becomes the mask prompt.
    """
    height, width = state["video_height"], state["video_width"]
    mask = np.zeros((height, width), dtype=bool)
    if obj.has_prompt:
        scale = np.array([width, height], dtype=np.float32)
        points = labels = box = None
        if obj.points:
            points = np.asarray(obj.points, dtype=np.float32) / scale
            labels = np.asarray(obj.labels, dtype=np.int32)
        if obj.box is not None:
            box = np.asarray(obj.box, dtype=np.float32).reshape(2, 2) / scale
        _, obj_ids, masks = predictor.add_new_points_or_box(
            state, frame_idx, obj.id, points=points, labels=labels, box=box, normalize_coords=False
        )
        mask = (masks[obj_ids.index(obj.id), 0] > 0).cpu().numpy()
    if obj.paint is None and obj.erase is None:
        return mask
    mask = compose_mask(mask, obj)
    predictor.add_new_mask(state, frame_idx, obj.id, torch.from_numpy(mask))
    return mask


def compose_mask(sam_mask: np.ndarray, obj: ObjectGuides) -> np.ndarray:
    """SAM 2's mask from the box/points (all False without them), plus painted, minus erased pixels."""
    mask = sam_mask.copy()
    if obj.paint is not None:
        mask |= obj.paint
    if obj.erase is not None:
        mask &= ~obj.erase
    return mask


def _autocast(device: torch.device):
    # bf16 on CUDA, as SAM 2's own examples run; full precision elsewhere.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class ObjectOutput:
    """SAM 2's raw output for one object on one frame: (1, 1, S/4, S/4) mask logits and the object-score logit."""

    mask_logits: torch.Tensor
    score_logit: float


class Labeler:
    """SAM 2 conditioned on guided references; labels targets (several per forward in refs mode).

    memory="refs": every target is frame K right after the K references and attends to the
    reference memories only, so its labels don't depend on other targets.
    memory="chain": targets are frames K, K+1, … of one pseudo-video (pass `num_targets`),
    with SAM 2's memory of recent frames; call `label` in order.
    """

    def __init__(
        self,
        predictor,
        prompts: PromptSet,
        memory: str = "refs",
        threshold: float = 0.0,
        num_targets: int | None = None,
    ):
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory mode {memory!r}: choose from {MEMORY_MODES}")
        if memory == "chain" and not num_targets:
            raise ValueError("chain mode needs num_targets (the pseudo-video's length)")
        self.predictor = predictor
        self.memory = memory
        self.threshold = threshold
        self.references = [r for r in prompts.references if r.objects]
        num_refs = len(self.references)
        num_frames = num_refs + (1 if memory == "refs" else num_targets)
        self._state = _new_state(predictor, num_frames)
        self._next_frame = num_refs
        with torch.inference_mode(), _autocast(predictor.device):
            self._condition_on_references()
            # refs mode: the reference memories are fixed, so they are assembled and projected once.
            self._groups = build_groups(predictor, self._state, num_refs) if memory == "refs" else None

    @property
    def object_ids(self) -> list[int]:
        return list(self._state["obj_ids"])

    def _condition_on_references(self) -> None:
        state, predictor = self._state, self.predictor
        for k, ref in enumerate(self.references):
            _encode(predictor, state, k, read_rgb(ref.image))
        for k, ref in enumerate(self.references):
            state["video_height"], state["video_width"] = ref.height, ref.width
            for obj in ref.objects:
                _condition(predictor, state, k, obj)
        # Encode the conditioning memories, then track every object through the references it
        # is not guided on, exactly as `propagate_in_video` does before reaching the targets.
        predictor.propagate_in_video_preflight(state)
        for obj_output_dict in state["output_dict_per_obj"].values():
            for out in obj_output_dict["cond_frame_outputs"].values():
                self._float_memory(out)
        start = min(t for out in state["output_dict_per_obj"].values() for t in out["cond_frame_outputs"])
        for k in range(start, len(self.references)):
            self._track(k)
        state["cached_features"].clear()

    def _track(self, frame_idx: int) -> dict[int, ObjectOutput]:
        """One frame of `propagate_in_video` (references, and targets in chain mode): each object's
        output, its memory encoded and kept for later frames."""
        state, outputs = self._state, {}
        for obj_idx, obj_id in enumerate(state["obj_ids"]):
            obj_output_dict = state["output_dict_per_obj"][obj_idx]
            out = obj_output_dict["cond_frame_outputs"].get(frame_idx)
            if out is None:
                out, _ = self.predictor._run_single_frame_inference(
                    inference_state=state,
                    output_dict=obj_output_dict,
                    frame_idx=frame_idx,
                    batch_size=1,
                    is_init_cond_frame=False,
                    point_inputs=None,
                    mask_inputs=None,
                    reverse=False,
                    run_mem_encoder=True,
                )
                obj_output_dict["non_cond_frame_outputs"][frame_idx] = self._float_memory(out)
            outputs[obj_id] = ObjectOutput(out["pred_masks"], float(out["object_score_logits"].item()))
        return outputs

    def _float_memory(self, out: dict) -> dict:
        """Keep a stored memory in float32 where no autocast runs (CPU, MPS).

        SAM 2 stores memories in bf16. Without autocast, memory attention fails on them when no
        float32 object pointer is concatenated alongside (an object tracked on a reference before
        the one it is guided on); with a pointer, torch.cat promotes them to float32 exactly as here.
        """
        features = out["maskmem_features"]
        if self.predictor.device.type != "cuda" and features is not None and features.dtype == torch.bfloat16:
            out["maskmem_features"] = features.float()
        return out

    def _forget_old_frames(self, frame_idx: int) -> None:
        """Drop chain memories no later frame can reach, so memory stays flat over long runs."""
        p = self.predictor
        reach = max((p.num_maskmem - 2) * p.memory_temporal_stride_for_eval + 2, p.max_obj_ptrs_in_encoder)
        for out in self._state["output_dict_per_obj"].values():
            for t in [t for t in out["non_cond_frame_outputs"] if t <= frame_idx - reach]:
                del out["non_cond_frame_outputs"][t]

    def predict_many(self, rgbs: list[np.ndarray]) -> list[dict[int, ObjectOutput]]:
        """SAM 2's raw outputs on targets ((H, W, 3) uint8 RGB), per object ID; several at once in refs mode."""
        if self.memory == "chain" or not rgbs:
            return [self._predict_chain(rgb) for rgb in rgbs]
        size = self.predictor.image_size
        with torch.inference_mode(), _autocast(self.predictor.device):
            images = torch.stack([to_model_input(rgb, size) for rgb in rgbs]).to(self.predictor.device)
            results = track_targets(self.predictor, images, self._groups)
        return [
            {obj_id: ObjectOutput(results[obj_id][0][t : t + 1], float(results[obj_id][1][t])) for obj_id in self.object_ids}
            for t in range(len(rgbs))
        ]

    def predict(self, rgb: np.ndarray) -> dict[int, ObjectOutput]:
        """SAM 2's raw outputs on one target, per object ID."""
        return self.predict_many([rgb])[0]

    def _predict_chain(self, rgb: np.ndarray) -> dict[int, ObjectOutput]:
        state, frame_idx = self._state, self._next_frame
        if frame_idx >= state["num_frames"]:
            raise RuntimeError(f"chain mode was set up for {state['num_frames']} frames")
        with torch.inference_mode(), _autocast(self.predictor.device):
            state["cached_features"] = {}
            _encode(self.predictor, state, frame_idx, rgb)
            outputs = self._track(frame_idx)
            state["cached_features"] = {}
        self._forget_old_frames(frame_idx)
        self._next_frame += 1
        return outputs

    def label_many(self, rgbs: list[np.ndarray]) -> list[list[Detection]]:
        """One `Detection` per object ID for each target, masks at each target's own size."""
        return [self._detections(rgb, outputs) for rgb, outputs in zip(rgbs, self.predict_many(rgbs))]

    def label(self, rgb: np.ndarray) -> list[Detection]:
        """One `Detection` per object ID on one target, masks at the target's own size."""
        return self.label_many([rgb])[0]

    def _detections(self, rgb: np.ndarray, outputs: dict[int, ObjectOutput]) -> list[Detection]:
        height, width = rgb.shape[:2]
        detections = []
        for obj_id, out in outputs.items():
            # Upsample the low-res logits to the target's size as `_get_orig_video_res_output` does.
            logits = F.interpolate(
                out.mask_logits.float(), size=(height, width), mode="bilinear", align_corners=False
            )
            mask = (logits[0, 0] > 0).cpu().numpy()
            present = out.score_logit > self.threshold and bool(mask.any())
            detections.append(Detection(obj_id, out.score_logit, mask, present))
        return detections


class ReferencePreview:
    """The mask one object's guides condition the batch on, for a live preview of one reference.

    The image is encoded once; each `mask` call runs only the prompt encoder and mask decoder.
    Usage: `ReferencePreview(predictor, rgb).mask(ObjectGuides(1, box=(10, 10, 80, 60)))`.
    """

    def __init__(self, predictor, rgb: np.ndarray):
        self.predictor = predictor
        self._state = _new_state(predictor, num_frames=1)
        self._state["video_height"], self._state["video_width"] = rgb.shape[:2]
        with torch.inference_mode(), _autocast(predictor.device):
            _encode(predictor, self._state, 0, rgb)

    def mask(self, obj: ObjectGuides) -> np.ndarray:
        """(H, W) bool mask, identical to the one the batch conditions object `obj.id` on."""
        with torch.inference_mode(), _autocast(self.predictor.device):
            if obj.id in self._state["obj_id_to_idx"]:
                # Start from a blank frame, as the batch does: no earlier mask feeds the decoder.
                self.predictor.clear_all_prompts_in_frame(self._state, 0, obj.id, need_output=False)
            return _condition(self.predictor, self._state, 0, obj)
