"""SAM 2's own runs and the labeler's on the same guides, and how they are compared: what test_fidelity.py
(float32), test_fidelity_bf16.py (bf16 autocast on the CPU) and cuda_checks.py (the GPU) share.

refs mode, target t: SAM2VideoPredictor's `propagate_in_video` on a JPEG folder [ref_1 … ref_K, t], at
frame K. chain mode: on [ref_1 … ref_K, t_1 … t_N]. Raw mask logits and object-score logits are compared.
float32 is compared to TOL; bf16 by the masks' IoU and the logits' mean difference (test_fidelity_bf16.py's
docstring says what was observed and why these bounds).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from helpers import as_backend, save_jpeg, synthetic_image

from labeler.models.sam2.tracker import Sam2TargetLabeler
from labeler.prompts.prompt_set import ObjectGuides, PromptSet, ReferenceGuides
from labeler.utils.images import read_rgb

TOL = 1e-3
W, H = 320, 240


def _disc(cx, cy, r):
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r * r


# Each case: per reference, the guided objects.
CASES = {
    "box": [[ObjectGuides(1, box=(40, 30, 200, 180))]],
    "points_with_negative": [[ObjectGuides(1, points=[(120, 100), (250, 60)], labels=[1, 0])]],
    "box_and_points": [[ObjectGuides(1, box=(60, 40, 260, 200), points=[(150, 120), (80, 60)], labels=[1, 0])]],
    "brush_only": [[ObjectGuides(1, paint=_disc(160, 120, 50))]],
    "box_brush_paint_erase": [[ObjectGuides(1, box=(40, 30, 200, 180), paint=_disc(250, 180, 40), erase=_disc(100, 90, 30))]],
    "two_objects_one_batch": [  # same references: one batched forward
        [ObjectGuides(1, box=(20, 20, 150, 140)), ObjectGuides(2, points=[(250, 180), (60, 60)], labels=[1, 0])],
        [ObjectGuides(1, points=[(100, 90)], labels=[1]), ObjectGuides(2, paint=_disc(230, 170, 40))],
    ],
    "three_objects_subsets": [
        [ObjectGuides(1, box=(20, 20, 150, 140)), ObjectGuides(3, points=[(250, 180)], labels=[1])],
        [ObjectGuides(1, points=[(60, 50)], labels=[1]), ObjectGuides(2, box=(160, 100, 300, 230))],
        [ObjectGuides(2, paint=_disc(200, 160, 35)), ObjectGuides(3, box=(180, 120, 310, 235), erase=_disc(300, 230, 20))],
    ],
    # A target taught in a review: each object guided by its final mask alone, one absent (an empty mask).
    "taught_mask_and_absent": [
        [ObjectGuides(1, box=(20, 20, 150, 140)), ObjectGuides(2, points=[(250, 180)], labels=[1])],
        [ObjectGuides(1, paint=_disc(120, 100, 45)), ObjectGuides(2, absent=True)],
    ],
}

CHAIN_CASES = ["box", "box_brush_paint_erase", "two_objects_one_batch", "three_objects_subsets"]


def prompt_set(tmp_path, case):
    refs = []
    for k, objects in enumerate(CASES[case]):
        path = save_jpeg(synthetic_image(100 + k), tmp_path / "refs" / f"ref{k}.jpg")
        refs.append(ReferenceGuides(image=path, width=W, height=H, objects=objects))
    return PromptSet(references=refs)


def target_images(tmp_path, n):
    return [save_jpeg(synthetic_image(200 + i), tmp_path / "targets" / f"t{i}.jpg") for i in range(n)]


@contextlib.contextmanager
def _float_memory_attention(predictor):
    """Let SAM 2 run on the CPU where it would fail: its bf16 memories reach memory attention
    without autocast when no float32 object pointer is concatenated to them (an object tracked
    on a reference before the one it is guided on). Upcasting is what torch.cat's type
    promotion does in every other case."""
    forward = predictor.memory_attention.forward
    predictor.memory_attention.forward = lambda *a, memory, **kw: forward(*a, memory=memory.float(), **kw)
    try:
        yield
    finally:
        del predictor.memory_attention.forward


def sam2_video_outputs(predictor, prompts, frames, folder, precision="fp32"):
    """Run SAM2VideoPredictor's public API on a JPEG folder; {frame: {obj_id: (video-res logits, score)}}.

    precision "bf16": under `torch.autocast(device, dtype=torch.bfloat16)` on the predictor's device, as the
    labeler runs it (SAM 2 runs there as it is: autocast casts its bf16 memories itself)."""
    if precision == "bf16":
        with torch.autocast(predictor.device.type, dtype=torch.bfloat16):
            return sam2_outputs_as_they_are(predictor, prompts, frames, folder)
    with _float_memory_attention(predictor):
        return sam2_outputs_as_they_are(predictor, prompts, frames, folder)


def sam2_outputs_as_they_are(predictor, prompts, frames, folder):
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        (folder / f"{i:05d}.jpg").symlink_to(frame)
    state = predictor.init_state(str(folder))
    for k, ref in enumerate(prompts.references):
        for obj in ref.objects:
            mask = np.zeros((ref.height, ref.width), dtype=bool)
            if obj.absent:  # SAM 2 accepts an empty mask prompt
                predictor.add_new_mask(state, k, obj.id, mask)
                continue
            if obj.has_prompt:
                _, ids, masks = predictor.add_new_points_or_box(
                    state, k, obj.id,
                    points=np.array(obj.points, dtype=np.float32) if obj.points else None,
                    labels=np.array(obj.labels, dtype=np.int32) if obj.points else None,
                    box=np.array(obj.box, dtype=np.float32) if obj.box else None,
                )
                mask = (masks[ids.index(obj.id), 0] > 0).cpu().numpy()
            if obj.paint is not None or obj.erase is not None:
                if obj.paint is not None:
                    mask |= obj.paint
                if obj.erase is not None:
                    mask &= ~obj.erase
                predictor.add_new_mask(state, k, obj.id, mask)
    results = {}
    for frame_idx, obj_ids, video_res_logits in predictor.propagate_in_video(state):
        results[frame_idx] = {}
        for idx, obj_id in enumerate(obj_ids):
            outs = state["output_dict_per_obj"][idx]
            out = outs["cond_frame_outputs"].get(frame_idx) or outs["non_cond_frame_outputs"][frame_idx]
            results[frame_idx][obj_id] = (video_res_logits[idx, 0].cpu(), out["object_score_logits"].item())
    return results


def labeler_for(predictor, prompts, memory="refs", precision="fp32", num_targets=None):
    """The labeler on the test predictor, at `precision`."""
    backend = as_backend(predictor, precision)
    assert backend.precision == precision
    return Sam2TargetLabeler(backend, prompts, memory=memory, num_targets=num_targets)


def refs_mode_pairs(predictor, tmp_path, case, precision="fp32", num_targets=2):
    """(ours, theirs) per target in refs mode: the labeler's raw outputs and SAM 2's on [refs…, target]."""
    prompts = prompt_set(tmp_path, case)
    labeler = labeler_for(predictor, prompts, "refs", precision)
    refs = [r.image for r in prompts.references]
    pairs = []
    for i, target in enumerate(target_images(tmp_path, num_targets)):
        theirs = sam2_video_outputs(predictor, prompts, refs + [target], tmp_path / f"video{i}", precision)
        pairs.append((labeler.predict(read_rgb(target)), theirs[len(refs)]))
    return pairs


def chain_mode_pairs(predictor, tmp_path, case, precision="fp32", num_targets=4):
    """(ours, theirs) per target in chain mode: SAM 2 on [refs…, targets…], the labeler in order."""
    prompts = prompt_set(tmp_path, case)
    targets = target_images(tmp_path, num_targets)
    labeler = labeler_for(predictor, prompts, "chain", precision, num_targets=len(targets))
    refs = [r.image for r in prompts.references]
    theirs = sam2_video_outputs(predictor, prompts, refs + targets, tmp_path / "video", precision)
    return [(labeler.predict(read_rgb(t)), theirs[len(refs) + i]) for i, t in enumerate(targets)]


def video_res_logits(out, height=H, width=W) -> torch.Tensor:
    """An `ObjectOutput`'s mask logits upsampled to the frame, as SAM 2's `_get_orig_video_res_output` does (CPU)."""
    logits = F.interpolate(out.mask_logits.float(), size=(height, width), mode="bilinear", align_corners=False)
    return logits[0, 0].cpu()


def assert_equal(ours, theirs, height, width):
    assert set(ours) == set(theirs)
    for obj_id, out in ours.items():
        logits = video_res_logits(out, height, width)
        ref_logits, ref_score = theirs[obj_id]
        assert abs(out.score_logit - ref_score) < TOL, f"object {obj_id} score"
        torch.testing.assert_close(logits, ref_logits, atol=TOL, rtol=0, msg=f"object {obj_id} mask logits")


MIN_IOU = 0.9  # masks' IoU, labeler vs SAM 2 under bf16 (test_fidelity_bf16.py says what was observed)
MEAN_TOL = 0.15  # mean |logit difference| / mean |logit|
SCORE_TOL = 0.05  # object-score logits: ~3 bf16 steps at the test checkpoint's scores (~3.0; observed: equal)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def deviation(logits: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(masks' IoU, mean |difference| / mean |ref|) of two logit maps."""
    logits, ref = logits.float(), ref.float()
    return _iou(logits > 0, ref > 0), ((logits - ref).abs().mean() / ref.abs().mean().clamp(min=1e-6)).item()


def within_bf16_tolerance(logits, ref) -> bool:
    iou, mean = deviation(logits, ref)
    return iou >= MIN_IOU and mean <= MEAN_TOL


def assert_close_bf16(ours, theirs):
    assert set(ours) == set(theirs)
    for obj_id, out in ours.items():
        ref_logits, ref_score = theirs[obj_id]
        iou, mean = deviation(video_res_logits(out), ref_logits)
        assert abs(out.score_logit - ref_score) <= SCORE_TOL, f"object {obj_id} score {out.score_logit} vs {ref_score}"
        assert iou >= MIN_IOU and mean <= MEAN_TOL, f"object {obj_id}: masks' IoU {iou:.4f}, mean difference {mean:.4f}"
