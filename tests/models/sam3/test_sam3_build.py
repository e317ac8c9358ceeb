"""Building SAM 3's tracker: the defaults are sam3's `build_tracker`, sizes are multiples of 14, `--checkpoint`
takes the released sam3.pt layout and refuses anything else saying why, the patches refuse another sam3's
source, and `download --model sam3` explains the gated weights."""

from __future__ import annotations

import pytest
import torch
from sam3_helpers import SIZE, released_layout

from labeler.errors import UsageError
from labeler.models.backend import ModelSettings, check_model, input_size
from labeler.models.common import ModelError
from labeler.models.sam3 import internals
from labeler.models.sam3.build import TEST_ARCHITECTURE, build_tracker, check_image_size


def _plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    return isinstance(value, (bool, int, float, str, type(None)))


def _settings(predictor) -> dict:
    """The predictor's own settings (plain attributes) and every submodule's, by name (caches left out)."""
    return {f"{name}.{key}": value for name, module in predictor.named_modules() for key, value in vars(module).items()
            if not key.startswith("_") and key not in ("training", "cache") and _plain(value)}


def test_the_default_build_is_sam3s_build_tracker(monkeypatch):
    """Names, shapes and settings of `build_tracker()` (1008 px, ViT-L/32) equal sam3's own
    `build_tracker(apply_temporal_disambiguation=True, with_backbone=True)` (built on the meta device: no memory)."""
    from sam3.model_builder import build_tracker as sam3_build_tracker

    from labeler.models.sam3.build import SAM3, _construct

    linspace = torch.linspace  # the ViT reads its drop-path rates with .item(): those on the CPU
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with internals.contained(), torch.device("meta"):
        internals.apply_patches()
        theirs = sam3_build_tracker(apply_temporal_disambiguation=True, with_backbone=True)
        internals.leave_build_autocast(theirs)
        ours = _construct(1008, SAM3)
        internals.leave_build_autocast(ours)
    theirs_state, ours_state = theirs.state_dict(), ours.state_dict()
    assert list(ours_state) == list(theirs_state)
    assert {k: v.shape for k, v in ours_state.items()} == {k: v.shape for k, v in theirs_state.items()}
    assert sum(v.numel() for v in ours_state.values()) > 400e6
    assert _settings(ours) == _settings(theirs)
    assert ours.image_size == 1008 and ours.max_cond_frames_in_attn == 4 and ours.use_memory_selection


def test_image_sizes_are_multiples_of_14():
    for bad in (224 + 7, 256, 42):
        with pytest.raises(ModelError, match="multiple of 14"):
            check_image_size(bad)
    with pytest.raises(UsageError, match="multiple of 14"):
        check_model(ModelSettings("sam3", checkpoint="none", image_size=1024))
    assert input_size(ModelSettings("sam3", checkpoint="none")) == 1008
    assert input_size(ModelSettings("sam3", checkpoint="none", image_size=336)) == 336


def test_the_released_layout_loads_and_anything_else_is_refused(sam3_predictor, sam3_checkpoint, tmp_path):
    loaded = build_tracker(sam3_checkpoint, SIZE, "cpu", architecture=TEST_ARCHITECTURE)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), sam3_predictor.state_dict().values()))
    # At another size the ViT's rotary tables are the model's own (they are computed from the size, not learned).
    other = build_tracker(sam3_checkpoint, 168, "cpu", architecture=TEST_ARCHITECTURE)
    assert other.image_size == 168

    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1)}}, tmp_path / "sam2.pt")  # SAM 2's names
    with pytest.raises(ModelError, match=r"sam2\.pt: no 'tracker\.' or 'detector\.backbone\.vision_backbone\.' "
                                         r"weights inside \(not SAM 3's sam3\.pt layout"):
        build_tracker(tmp_path / "sam2.pt", SIZE, "cpu", architecture=TEST_ARCHITECTURE)
    state = released_layout(sam3_predictor)
    del state["tracker.maskmem_tpos_enc"]
    state["tracker.maskmem_backbone.out_proj.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ModelError, match=r"partial\.pt does not match SAM 3's tracker \(missing keys: maskmem_tpos_enc; "
                                         r"shape mismatches: maskmem_backbone.out_proj.weight\)"):
        build_tracker(tmp_path / "partial.pt", SIZE, "cpu", architecture=TEST_ARCHITECTURE)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        check_model(ModelSettings("sam3", checkpoint=tmp_path / "text.pt"))
    with pytest.raises(ModelError, match="checkpoint not found: checkpoints/sam3.pt; python main.py download --model sam3"):
        check_model(ModelSettings("sam3", checkpoint=None))


def test_a_patch_refuses_source_that_is_not_sam3_0_1_4s(monkeypatch):
    class Other:
        def init_state(self):
            return torch.device("cuda")

    monkeypatch.setitem(internals._SOURCE_SHA256, "Other.init_state", internals.source_sha256(Other, "init_state"))
    with pytest.raises(UsageError, match=r"Other.init_state in the installed sam3 is not sam3 0\.1\.4's \('x' is not in "
                                         r"it once\).*pip install --no-deps sam3==0\.1\.4"):
        internals._apply(Other, "init_state", [("x", "y")], "test")
    monkeypatch.setitem(internals._SOURCE_SHA256, "Other.init_state", "0" * 64)
    with pytest.raises(UsageError, match=r"Other.init_state in the installed sam3 is not sam3 0\.1\.4's \(its source differs\)"):
        internals._apply(Other, "init_state", [], "test")
    with pytest.raises(UsageError, match=r"\(sam3\) 0\.2\.0 is installed, but the labeler relies on internals of sam3 0\.1\.4"):
        internals.check_sam3_version("0.2.0")
    patched = [getattr(cls, name)._labeler_patch for cls, name, _, _ in internals._PATCHES]
    assert all("sam3 issue #" in ref or "sam3 PR #" in ref for ref in patched)


def test_download_explains_the_gated_weights(caplog, tmp_path, monkeypatch):
    """`download --model sam3` downloads nothing (exit 1): it says the weights are gated and how to get them."""
    from labeler.cli import main

    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        assert main(["download", "--model", "sam3"]) == 1
    assert caplog.text.count("SAM 3's weights are gated on the Hugging Face model hub") == 1
    assert "https://huggingface.co/facebook/sam3" in caplog.text and "SAM License" in caplog.text
    assert "hf download facebook/sam3 sam3.pt --local-dir checkpoints" in caplog.text
    assert not any(tmp_path.iterdir())
