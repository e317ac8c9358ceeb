"""On CUDA: `auto` is bf16 there, and the labeler matches SAM 2's SAM2VideoPredictor on the GPU, under
`torch.autocast("cuda", dtype=torch.bfloat16)` (bf16) and without it (fp32, TF32 off), with
reference_runs.py's runs and bounds.

Not a test_*.py file: the suite (on CPU machines) doesn't collect it; benchmarks/gpu/run.sh runs it on a
GPU machine by name (`pytest tests/models/sam2/cuda_checks.py`). Elsewhere it skips: it needs CUDA.
"""

from __future__ import annotations

import pytest
import torch
from reference_runs import (
    assert_close_bf16,
    assert_equal,
    chain_mode_pairs,
    refs_mode_pairs,
)

from labeler.models.backend import ModelSettings
from labeler.models.sam2.backend import Sam2Backend
from labeler.models.sam2.build import build_predictor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

H, W = 240, 320
CASES = ["box", "box_brush_paint_erase", "two_objects_one_batch", "three_objects_subsets"]


@pytest.fixture(scope="module")
def cuda_predictor(test_checkpoint):
    return build_predictor("tiny", checkpoint=test_checkpoint, image_size=256, device="cuda")


@pytest.fixture
def no_tf32():
    """float32 as float32: TF32 convolutions (cuDNN's default) and matmuls off for the test."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_auto_is_bf16_on_cuda_with_the_cache_key_it_had(cuda_predictor):
    backend = Sam2Backend(ModelSettings(checkpoint="none", image_size=256, device="cuda"), predictor=cuda_predictor)
    assert backend.precision == "bf16"
    assert backend.identity()["precision"] == "bf16-autocast" and backend.identity()["device"] == "cuda"


@pytest.mark.parametrize("case", CASES)
def test_cuda_bf16_matches_sam2_under_autocast(cuda_predictor, tmp_path, case):
    for ours, theirs in refs_mode_pairs(cuda_predictor, tmp_path / "refs", case, "bf16", num_targets=2):
        assert_close_bf16(ours, theirs)
    for ours, theirs in chain_mode_pairs(cuda_predictor, tmp_path / "chain", case, "bf16", num_targets=3):
        assert_close_bf16(ours, theirs)


@pytest.mark.parametrize("case", CASES)
def test_cuda_fp32_equals_sam2(cuda_predictor, tmp_path, no_tf32, case):
    for ours, theirs in refs_mode_pairs(cuda_predictor, tmp_path / "refs", case, "fp32", num_targets=2):
        assert_equal(ours, theirs, H, W)
    for ours, theirs in chain_mode_pairs(cuda_predictor, tmp_path / "chain", case, "fp32", num_targets=3):
        assert_equal(ours, theirs, H, W)
