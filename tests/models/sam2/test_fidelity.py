"""The core equals SAM 2's own SAM2VideoPredictor on the same weights, image size and guides.

refs mode, target t: `propagate_in_video` on a JPEG folder [ref_1 … ref_K, t], at frame K.
chain mode: `propagate_in_video` on [ref_1 … ref_K, t_1 … t_N].
Raw mask logits and object-score logits are compared, not binary masks: the test checkpoint's
amplified memory paths make objects differ, so a wrong object's memory would show.

Both run in float32 (`--precision fp32`, pinned: `auto` is bf16 on CPUs with native bf16). The reference
runs and comparisons are reference_runs.py's, which test_fidelity_bf16.py runs under bfloat16 autocast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import as_backend, save_jpeg, synthetic_image
from reference_runs import (
    CASES,
    CHAIN_CASES,
    TOL,
    H,
    W,
    assert_equal,
    chain_mode_pairs,
    prompt_set,
    refs_mode_pairs,
    target_images,
)

from labeler.models.common import detections
from labeler.models.sam2.tracker import ReferencePreview, Sam2TargetLabeler
from labeler.prompts.prompt_set import ObjectGuides
from labeler.utils.images import read_rgb


@pytest.mark.parametrize("case", list(CASES))
def test_refs_mode_equals_sam2_video_predictor(predictor, tmp_path, case):
    for ours, theirs in refs_mode_pairs(predictor, tmp_path, case, "fp32"):
        assert_equal(ours, theirs, H, W)


@pytest.mark.parametrize("case", CHAIN_CASES)
def test_chain_mode_equals_sam2_video_predictor(predictor, tmp_path, case):
    for ours, theirs in chain_mode_pairs(predictor, tmp_path, case, "fp32"):
        assert_equal(ours, theirs, H, W)


def test_objects_differ_enough_to_catch_a_wrong_memory(predictor, tmp_path):
    """The fidelity tolerance is far below the difference between two objects' outputs."""
    prompts = prompt_set(tmp_path, "three_objects_subsets")
    outputs = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompts).predict(read_rgb(target_images(tmp_path, 1)[0]))
    assert all(out.score_logit > 0 for out in outputs.values()), "test weights must keep objects visible"
    ids = sorted(outputs)
    for a, b in zip(ids, ids[1:]):
        diff = (outputs[a].mask_logits - outputs[b].mask_logits).abs().max().item()
        assert diff > 100 * TOL, f"objects {a} and {b} differ by only {diff}"


def test_refs_mode_target_does_not_depend_on_other_targets(predictor, tmp_path):
    prompts = prompt_set(tmp_path, "box")
    a, b, c = (read_rgb(p) for p in target_images(tmp_path, 3))
    first = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompts).predict(c)
    labeler = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompts)
    labeler.predict(a), labeler.predict(b)
    later = labeler.predict(c)
    for obj_id in first:
        assert torch.equal(first[obj_id].mask_logits, later[obj_id].mask_logits)


def test_targets_of_other_sizes_get_masks_at_their_own_size(predictor, tmp_path):
    prompts = prompt_set(tmp_path, "box")
    labeler = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompts)
    for size in [(500, 180), (97, 333)]:
        detections = labeler.label(synthetic_image(7, size=size))
        assert [d.mask.shape for d in detections] == [(size[1], size[0])]


@pytest.mark.parametrize("case", ["box", "box_and_points", "brush_only", "box_brush_paint_erase"])
def test_preview_is_the_conditioning_mask(predictor, tmp_path, case):
    """What the selector previews is SAM 2's mask of the box/points, plus paint, minus erase."""
    prompts = prompt_set(tmp_path, case)
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
    prompts = prompt_set(tmp_path, "two_objects_one_batch")
    labeler = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompts)
    assert [g.size for g in labeler._groups] == [2]
    rgbs = [read_rgb(p) for p in target_images(tmp_path, 3)]
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
    labeler = Sam2TargetLabeler(as_backend(predictor, "fp32"), prompt_set(tmp_path, "three_objects_subsets"))
    for size in [(W, H), (1280, 960), (97, 333)]:
        rgb = synthetic_image(8, size=size)
        outputs = labeler.predict(rgb)
        for d in detections(rgb, outputs, labeler.threshold, labeler.classes):
            alone = F.interpolate(outputs[d.id].mask_logits.float(), size=rgb.shape[:2], mode="bilinear",
                                  align_corners=False)[0, 0] > 0
            np.testing.assert_array_equal(d.mask, alone.numpy())
