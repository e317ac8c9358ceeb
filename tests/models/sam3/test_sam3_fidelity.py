"""The SAM 3 backend equals SAM 3's own `Sam3TrackerPredictor` (sam3 0.1.4) on the same weights, size and guides.

Each object runs alone in an inference state of its own, on both sides (the backend's independence choice,
labeler/models/sam3/tracker.py): an object's result equal to SAM 3's for that object alone is what makes it
independent of the others. refs mode, target t: `init_state` on a JPEG folder [ref_1 … ref_K, t] +
prompts + `propagate_in_video`, at frame K; chain mode: on [ref_1 … ref_K, t_1, t_2]. Raw logits are compared
at the frame's size, and they are **bit-identical** (torch.equal), as are the object-score logits: the backend
calls the predictor's own methods on the same features. The test checkpoint's memory paths are amplified
(sam3_helpers.make_sam3_checkpoint), so a wrong reference memory would show. float32 (`--precision fp32`).
The test model runs at 224 px (sam3_helpers.SIZE; LABELER_SAM3_TEST_SIZE=112 runs these at 112 px, where they
are bit-identical too).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import save_jpeg, synthetic_image
from sam3_helpers import sam3_video_outputs

from labeler.models.sam3.tracker import (
    ReferencePreview,
    Sam3TargetLabeler,
    to_model_input,
)
from labeler.prompts.prompt_set import ObjectGuides, PromptSet, ReferenceGuides
from labeler.utils.images import read_rgb

W, H = 320, 240


def _disc(cx, cy, r):
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r * r


# The guide kinds of tests/models/sam2/test_fidelity.py: per reference, the guided objects. Each object has a
# state of its own on both sides, so guide kinds share a reference (each one is checked object by object).
CASES = {
    "each_guide_kind": [[
        ObjectGuides(1, box=(40, 30, 200, 180)),
        ObjectGuides(2, points=[(120, 100), (250, 60)], labels=[1, 0]),  # points with a negative
        ObjectGuides(3, box=(60, 40, 260, 200), points=[(150, 120), (80, 60)], labels=[1, 0]),
        ObjectGuides(4, paint=_disc(160, 120, 50)),  # brush only
        ObjectGuides(5, box=(40, 30, 200, 180), paint=_disc(250, 180, 40), erase=_disc(100, 90, 30)),
    ]],
    # 1 on both references (box, then points), 2 only on the second, 3 on both but absent on the second.
    "objects_on_subsets": [
        [ObjectGuides(1, box=(20, 20, 150, 140)), ObjectGuides(3, points=[(250, 180), (60, 60)], labels=[1, 0])],
        [ObjectGuides(1, points=[(100, 90)], labels=[1]), ObjectGuides(2, box=(160, 100, 300, 230),
                                                                       erase=_disc(300, 230, 20)),
         ObjectGuides(3, absent=True)],
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


def _assert_bit_identical(ours, theirs):
    assert set(ours) == set(theirs)
    for obj_id, out in ours.items():
        logits = F.interpolate(out.mask_logits.float(), size=(H, W), mode="bilinear", align_corners=False)[0, 0]
        ref_logits, ref_score = theirs[obj_id]
        assert out.score_logit == ref_score, f"object {obj_id} score"
        assert torch.equal(logits, ref_logits), f"object {obj_id} mask logits differ by {(logits - ref_logits).abs().max()}"


@pytest.mark.parametrize("case", list(CASES))
def test_refs_mode_equals_sam3_tracker_predictor(sam3_backend, tmp_path, case):
    prompts = _prompt_set(tmp_path, case)
    labeler = Sam3TargetLabeler(sam3_backend, prompts, memory="refs")
    refs = [r.image for r in prompts.references]
    (target,) = _targets(tmp_path, 1)
    theirs = sam3_video_outputs(sam3_backend.predictor, prompts, refs + [target], tmp_path / "video")
    _assert_bit_identical(labeler.predict(read_rgb(target)), theirs[len(refs)])


def test_chain_mode_equals_sam3_tracker_predictor(sam3_backend, tmp_path):
    prompts = _prompt_set(tmp_path, "objects_on_subsets")
    targets = _targets(tmp_path, 2)
    labeler = Sam3TargetLabeler(sam3_backend, prompts, memory="chain", num_targets=len(targets))
    refs = [r.image for r in prompts.references]
    theirs = sam3_video_outputs(sam3_backend.predictor, prompts, refs + targets, tmp_path / "video")
    chained = [labeler.predict(read_rgb(t)) for t in targets]
    for i, ours in enumerate(chained):
        _assert_bit_identical(ours, theirs[len(refs) + i])
    # The memory paths count: the second target's logits with the first one's memory (chain) differ from
    # those with the references' alone (refs), so a wrong memory would not pass for a right one.
    alone = Sam3TargetLabeler(sam3_backend, prompts, memory="refs").predict(read_rgb(targets[1]))
    for obj_id, out in alone.items():
        assert (out.mask_logits - chained[1][obj_id].mask_logits).abs().max() > 0.01, f"object {obj_id}"


def test_preview_is_the_conditioning_mask(sam3_backend, tmp_path):
    """What the selector previews is SAM 3's mask of the box/points on the reference, plus paint, minus erase."""
    prompts = _prompt_set(tmp_path, "each_guide_kind")
    ref = prompts.references[0]
    obj = ref.objects[4]  # box, paint and erase
    preview = ReferencePreview(sam3_backend, read_rgb(ref.image))
    preview.mask(ObjectGuides(obj.id, points=[(10, 10)], labels=[1]))  # an earlier guide must not leak
    shown = preview.mask(obj)
    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "00000.jpg").symlink_to(ref.image)
    predictor = sam3_backend.predictor
    from sam3.model import (
        sam3_tracking_predictor,  # after labeler.models.sam3 imported sam3 (contained)
    )

    loader = sam3_tracking_predictor.load_video_frames
    sam3_tracking_predictor.load_video_frames = functools.partial(loader, img_mean=(0.5,) * 3, img_std=(0.5,) * 3)
    try:
        state = predictor.init_state(video_path=str(tmp_path / "video"))
    finally:
        sam3_tracking_predictor.load_video_frames = loader
    _, _, _, masks = predictor.add_new_points_or_box(state, 0, obj.id, box=np.array(obj.box, np.float32).reshape(2, 2)
                                                    / np.array([W, H], np.float32))
    expected = ((masks[0, 0] > 0).numpy() | obj.paint) & ~obj.erase
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(shown, expected)


def test_model_input_is_sam3_frame_loaders_bit_for_bit(tmp_path):
    """Resized and normalised (0.5/0.5) as `load_video_frames_from_jpg_images` does."""
    from sam3.model.utils.sam2_utils import load_video_frames_from_jpg_images

    path = save_jpeg(synthetic_image(5, size=(400, 300)), tmp_path / "v" / "00000.jpg")
    for size in (112, 1008):
        theirs, _, _ = load_video_frames_from_jpg_images(str(tmp_path / "v"), size, True, img_mean=(0.5,) * 3,
                                                         img_std=(0.5,) * 3, compute_device=torch.device("cpu"))
        assert torch.equal(to_model_input(read_rgb(path), size), theirs[0])
