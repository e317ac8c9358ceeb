"""What the SAM 3 tests share: the small test architecture's checkpoint in the released `sam3.pt` layout, with
its memory paths amplified, and SAM 3's own predictor run on a JPEG folder (the reference of the fidelity tests)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from labeler.models.backend import register_backend
from labeler.models.sam3.build import (
    BACKBONE_PREFIX,
    TEST_ARCHITECTURE,
    TRACKER_PREFIX,
    build_tracker,
)
from labeler.models.sam3.tracker import MEAN, STD

# The test model's input side in the fidelity tests: 16 x 16 patches of 14 (4 x 4 windows of 4 in its windowed
# block); LABELER_SAM3_TEST_SIZE=112 python -m pytest tests/models/sam3/test_sam3_fidelity.py runs them at 112.
SIZE = int(os.environ.get("LABELER_SAM3_TEST_SIZE", "224"))
TEST_MODEL = "sam3_test"  # TEST_ARCHITECTURE's model name (build.ARCHITECTURES), registered by `register_test_model`


def register_test_model() -> None:
    register_backend("sam3", "labeler.models.sam3.backend:Sam3Backend", ["sam3", TEST_MODEL])


def released_layout(predictor) -> dict:
    """The predictor's weights under sam3.pt's names (`tracker.*`, `detector.backbone.vision_backbone.*`)."""
    own = "backbone.vision_backbone."
    return {(BACKBONE_PREFIX + k[len(own):] if k.startswith(own) else TRACKER_PREFIX + k): v
            for k, v in predictor.state_dict().items()}


def make_sam3_checkpoint(path: Path, image_size: int = SIZE) -> Path:
    """Untrained TEST_ARCHITECTURE weights whose memory paths are amplified, saved as sam3.pt is laid out.

    As `helpers.make_test_checkpoint` does for SAM 2: with plain random weights memories barely change
    the output, so scaling the memory encoder's last mask-downsampler conv, memory attention's cross-attention
    output and sharpening it, the object-pointer projections and the object-score bias make objects differ.
    """
    model = build_tracker("none", image_size, "cpu", seed=1, architecture=TEST_ARCHITECTURE)
    with torch.no_grad():
        model.maskmem_backbone.mask_downsampler.encoder[-1].weight.mul_(30.0)
        for layer in model.transformer.encoder.layers:
            layer.cross_attn_image.out_proj.weight.mul_(30.0)
            layer.cross_attn_image.q_proj.weight.mul_(5.0)
            layer.cross_attn_image.k_proj.weight.mul_(5.0)
        model.obj_ptr_proj.layers[-1].weight.mul_(10.0)
        model.obj_ptr_tpos_proj.weight.mul_(30.0)
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(3.0)
    state = released_layout(model)
    state["detector.transformer.decoder.bbox_embed.weight"] = torch.zeros(4, 256)  # the detector's own: ignored
    torch.save({"model": state}, path)
    return path


def sam3_video_outputs(predictor, prompts, frames, folder, obj_ids=None) -> dict:
    """SAM 3's `Sam3TrackerPredictor` on a JPEG folder, each object alone in a state of its own (`init_state` +
    its prompts + `propagate_in_video`): {frame: {obj_id: ((H, W) video-res logits, score logit)}}.

    The frames are normalised with SAM 3's current statistics (0.5/0.5, GitHub commit 1daff5e), which the
    sam3 0.1.4 wheel's loader doesn't default to yet (see labeler/models/sam3/tracker.py).
    """
    from sam3.model import sam3_tracking_predictor

    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        (folder / f"{i:05d}.jpg").symlink_to(frame)
    ids = obj_ids or sorted({o.id for r in prompts.references for o in r.objects})
    results: dict = {}
    loader = sam3_tracking_predictor.load_video_frames
    sam3_tracking_predictor.load_video_frames = functools.partial(loader, img_mean=MEAN, img_std=STD)
    try:
        for obj_id in ids:
            state = predictor.init_state(video_path=str(folder))
            for k, ref in enumerate(prompts.references):
                for obj in ref.objects:
                    if obj.id == obj_id:
                        _prompt(predictor, state, k, obj, ref.width, ref.height)
            for frame_idx, out_ids, _, video_res, scores in predictor.propagate_in_video(
                    state, None, None, False, tqdm_disable=True, propagate_preflight=True):
                results.setdefault(frame_idx, {})[obj_id] = (video_res[0, 0].cpu(), float(scores[0].item()))
    finally:
        sam3_tracking_predictor.load_video_frames = loader
    return results


def _prompt(predictor, state, k, obj, width, height):
    mask = np.zeros((height, width), dtype=bool)
    if obj.absent:
        predictor.add_new_mask(state, k, obj.id, torch.from_numpy(mask))
        return
    if obj.has_prompt:
        scale = np.array([width, height], dtype=np.float32)
        _, ids, _, masks = predictor.add_new_points_or_box(
            state, k, obj.id,
            points=np.array(obj.points, dtype=np.float32) / scale if obj.points else None,
            labels=np.array(obj.labels, dtype=np.int32) if obj.points else None,
            box=np.array(obj.box, dtype=np.float32).reshape(2, 2) / scale if obj.box else None,
        )
        mask = (masks[ids.index(obj.id), 0] > 0).cpu().numpy()
    if obj.paint is not None or obj.erase is not None:
        if obj.paint is not None:
            mask |= obj.paint
        if obj.erase is not None:
            mask &= ~obj.erase
        predictor.add_new_mask(state, k, obj.id, torch.from_numpy(mask))
