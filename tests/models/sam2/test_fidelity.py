"""The core equals SAM 2's own SAM2VideoPredictor on the same weights, image size and guides.

refs mode, target t: `propagate_in_video` on a JPEG folder [ref_1 … ref_K, t], at frame K.
chain mode: `propagate_in_video` on [ref_1 … ref_K, t_1 … t_N].
Raw mask logits and object-score logits are compared, not binary masks: the test checkpoint's
amplified memory paths make objects differ, so a wrong object's memory would show.

Both run in float32 (`--precision fp32`, pinned: `auto` is bf16 on CPUs with native bf16). The machinery
here (`labeler_for`, `sam2_video_outputs`, `refs_mode_pairs`, `chain_mode_pairs`) takes a precision;
test_fidelity_bf16.py runs it under bfloat16 autocast.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import as_backend, save_jpeg, synthetic_image

from labeler.models.sam2.tracker import ReferencePreview, Sam2TargetLabeler
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


def _prompt_set(tmp_path, case):
    refs = []
    for k, objects in enumerate(CASES[case]):
        path = save_jpeg(synthetic_image(100 + k), tmp_path / "refs" / f"ref{k}.jpg")
        refs.append(ReferenceGuides(image=path, width=W, height=H, objects=objects))
    return PromptSet(references=refs)


def _targets(tmp_path, n):
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
            return _sam2_video_outputs(predictor, prompts, frames, folder)
    with _float_memory_attention(predictor):
        return _sam2_video_outputs(predictor, prompts, frames, folder)


def _sam2_video_outputs(predictor, prompts, frames, folder):
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
    prompts = _prompt_set(tmp_path, case)
    labeler = labeler_for(predictor, prompts, "refs", precision)
    refs = [r.image for r in prompts.references]
    pairs = []
    for i, target in enumerate(_targets(tmp_path, num_targets)):
        theirs = sam2_video_outputs(predictor, prompts, refs + [target], tmp_path / f"video{i}", precision)
        pairs.append((labeler.predict(read_rgb(target)), theirs[len(refs)]))
    return pairs


def chain_mode_pairs(predictor, tmp_path, case, precision="fp32", num_targets=4):
    """(ours, theirs) per target in chain mode: SAM 2 on [refs…, targets…], the labeler in order."""
    prompts = _prompt_set(tmp_path, case)
    targets = _targets(tmp_path, num_targets)
    labeler = labeler_for(predictor, prompts, "chain", precision, num_targets=len(targets))
    refs = [r.image for r in prompts.references]
    theirs = sam2_video_outputs(predictor, prompts, refs + targets, tmp_path / "video", precision)
    return [(labeler.predict(read_rgb(t)), theirs[len(refs) + i]) for i, t in enumerate(targets)]


def video_res_logits(out, height=H, width=W) -> torch.Tensor:
    """An `ObjectOutput`'s mask logits upsampled to the frame, as SAM 2's `_get_orig_video_res_output` does (CPU)."""
    logits = F.interpolate(out.mask_logits.float(), size=(height, width), mode="bilinear", align_corners=False)
    return logits[0, 0].cpu()


def _assert_equal(ours, theirs, height, width):
    assert set(ours) == set(theirs)
    for obj_id, out in ours.items():
        logits = video_res_logits(out, height, width)
        ref_logits, ref_score = theirs[obj_id]
        assert abs(out.score_logit - ref_score) < TOL, f"object {obj_id} score"
        torch.testing.assert_close(logits, ref_logits, atol=TOL, rtol=0, msg=f"object {obj_id} mask logits")


@pytest.mark.parametrize("case", list(CASES))
def test_refs_mode_equals_sam2_video_predictor(predictor, tmp_path, case):
    for ours, theirs in refs_mode_pairs(predictor, tmp_path, case, "fp32"):
        _assert_equal(ours, theirs, H, W)


CHAIN_CASES = ["box", "box_brush_paint_erase", "two_objects_one_batch", "three_objects_subsets"]


@pytest.mark.parametrize("case", CHAIN_CASES)
def test_chain_mode_equals_sam2_video_predictor(predictor, tmp_path, case):
    for ours, theirs in chain_mode_pairs(predictor, tmp_path, case, "fp32"):
        _assert_equal(ours, theirs, H, W)


def test_objects_differ_enough_to_catch_a_wrong_memory(predictor, tmp_path):
    """The fidelity tolerance is far below the difference between two objects' outputs."""
    prompts = _prompt_set(tmp_path, "three_objects_subsets")
    outputs = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompts).predict(read_rgb(_targets(tmp_path, 1)[0]))
    assert all(out.score_logit > 0 for out in outputs.values()), "test weights must keep objects visible"
    ids = sorted(outputs)
    for a, b in zip(ids, ids[1:]):
        diff = (outputs[a].mask_logits - outputs[b].mask_logits).abs().max().item()
        assert diff > 100 * TOL, f"objects {a} and {b} differ by only {diff}"


def test_refs_mode_target_does_not_depend_on_other_targets(predictor, tmp_path):
    prompts = _prompt_set(tmp_path, "box")
    a, b, c = (read_rgb(p) for p in _targets(tmp_path, 3))
    first = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompts).predict(c)
    labeler = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompts)
    labeler.predict(a), labeler.predict(b)
    later = labeler.predict(c)
    for obj_id in first:
        assert torch.equal(first[obj_id].mask_logits, later[obj_id].mask_logits)


def test_targets_of_other_sizes_get_masks_at_their_own_size(predictor, tmp_path):
    prompts = _prompt_set(tmp_path, "box")
    labeler = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompts)
    for size in [(500, 180), (97, 333)]:
        detections = labeler.label(synthetic_image(7, size=size))
        assert [d.mask.shape for d in detections] == [(size[1], size[0])]


@pytest.mark.parametrize("case", ["box", "box_and_points", "brush_only", "box_brush_paint_erase"])
def test_preview_is_the_conditioning_mask(predictor, tmp_path, case):
    """What the selector previews is SAM 2's mask of the box/points, plus paint, minus erase."""
    prompts = _prompt_set(tmp_path, case)
    ref = prompts.references[0]
    obj = ref.objects[0]
    preview = ReferencePreview(as_backend(predictor, "fp32"), read_rgb(ref.image))
    preview.mask(ObjectGuides(obj.id, points=[(10, 10)], labels=[1]))  # an earlier guide must not leak
    shown = preview.mask(obj)

    expected = np.zeros((H, W), dtype=bool)
    if obj.has_prompt:  # SAM 2's own mask for these box/points on this reference
        (tmp_path / "video").mkdir()
        (tmp_path / "video" / "00000.jpg").symlink_to(ref.image)
        state = predictor.init_state(str(tmp_path / "video"))
        _, _, masks = predictor.add_new_points_or_box(
            state, 0, obj.id,
            points=np.array(obj.points, dtype=np.float32) if obj.points else None,
            labels=np.array(obj.labels, dtype=np.int32) if obj.points else None,
            box=np.array(obj.box, dtype=np.float32) if obj.box else None,
        )
        expected = (masks[0, 0] > 0).numpy()
    if obj.paint is not None:
        expected |= obj.paint
    if obj.erase is not None:
        expected &= ~obj.erase
    assert expected.any()
    np.testing.assert_array_equal(shown, expected)


def test_several_targets_in_one_forward_equal_one_at_a_time(predictor, tmp_path):
    """`--batch-size`: batched and unbatched refs-mode results agree within the fidelity tolerance."""
    prompts = _prompt_set(tmp_path, "two_objects_one_batch")
    labeler = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompts)
    assert [g.size for g in labeler._groups] == [2]
    rgbs = [read_rgb(p) for p in _targets(tmp_path, 3)]
    together = labeler.predict_many(rgbs)
    for rgb, batched in zip(rgbs, together):
        alone = labeler.predict(rgb)
        for obj_id, out in alone.items():
            assert abs(out.score_logit - batched[obj_id].score_logit) < TOL
            torch.testing.assert_close(batched[obj_id].mask_logits, out.mask_logits, atol=TOL, rtol=0)


@pytest.mark.parametrize("size", [64, 256, 1024])
def test_model_input_is_sam2_frame_loaders_bit_for_bit(tmp_path, size):
    """Resized and normalised as `load_video_frames` does (whose normalisation is looked up, not computed)."""
    from sam2.utils.misc import _load_img_as_tensor

    from labeler.models.sam2.tracker import to_model_input

    path = save_jpeg(synthetic_image(5, size=(400, 300)), tmp_path / "t.jpg")
    theirs = _load_img_as_tensor(path, size)[0].float()
    theirs -= torch.tensor((0.485, 0.456, 0.406))[:, None, None]
    theirs /= torch.tensor((0.229, 0.224, 0.225))[:, None, None]
    assert torch.equal(to_model_input(read_rgb(path), size), theirs)


def test_masks_are_each_objects_upsampled_logits_bit_for_bit(predictor, tmp_path):
    """All objects are upsampled in one call; each mask equals its own logits upsampled alone, > 0."""
    labeler = Sam2TargetLabeler(as_backend(predictor, "fp32"), _prompt_set(tmp_path, "three_objects_subsets"))
    for size in [(W, H), (1280, 960), (97, 333)]:
        rgb = synthetic_image(8, size=size)
        outputs = labeler.predict(rgb)
        for d in labeler._detections(rgb, outputs):
            alone = F.interpolate(outputs[d.id].mask_logits.float(), size=rgb.shape[:2], mode="bilinear",
                                  align_corners=False)[0, 0] > 0
            np.testing.assert_array_equal(d.mask, alone.numpy())
