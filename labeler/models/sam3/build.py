"""Building SAM 3's tracker (`Sam3TrackerPredictor`: its ViT and the SAM 2-like tracker, no detector, no text
encoder) at any input size, and loading the released `sam3.pt` into it.

`build_tracker` below is `sam3.model_builder.build_tracker(apply_temporal_disambiguation=True,
with_backbone=True)` with the input size as a parameter (sam3's hard-codes 1008) and the ViT's depth, width,
heads, global blocks and window size taken from an `Architecture` (the released one by default; tests use a
small one through the same code). tests/models/sam3/test_sam3_build.py checks that the defaults give
build_tracker's parameter names, shapes and settings.

Usage: `predictor = build_tracker(checkpoint="none", image_size=224, device="cpu", architecture=TEST_ARCHITECTURE)`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..common import UNTRAINED, ModelError
from ..sam2.build import check_checkpoint_file

log = logging.getLogger(__name__)

PATCH = 14  # the ViT's patch size: input sides are multiples of it
DEFAULT_SIZE = 1008  # the released model's input side
CHECKPOINT_FILE = "sam3.pt"  # the released checkpoint's name on the model hub
CHECKPOINT_DIR = Path("checkpoints")
HUB_PAGE = "https://huggingface.co/facebook/sam3"
# The tracker's part and the vision backbone's part of the released checkpoint (SAM 3's video model:
# `Sam3VideoInference(detector=..., tracker=...)`; the tracker there shares the detector's backbone).
TRACKER_PREFIX, BACKBONE_PREFIX = "tracker.", "detector.backbone.vision_backbone."


@dataclass(frozen=True)
class Architecture:
    """The ViT's shape (everything else is the released tracker's)."""

    depth: int = 32
    width: int = 1024
    heads: int = 16
    global_blocks: tuple[int, ...] = (7, 15, 23, 31)
    window_size: int = 24


SAM3 = Architecture()  # ViT-L/32 (patch 14), as released
# For tests and benchmarks with untrained weights: two blocks (one windowed, one global), width 256.
TEST_ARCHITECTURE = Architecture(depth=2, width=256, heads=4, global_blocks=(1,), window_size=4)
ARCHITECTURES = {"sam3": SAM3, "sam3_test": TEST_ARCHITECTURE}
MODELS = ("sam3",)  # the --model names users see; "sam3_test" is registered by the tests


def default_checkpoint() -> Path:
    return CHECKPOINT_DIR / CHECKPOINT_FILE


def check_image_size(image_size: int | None) -> None:
    """None (1008) or a multiple of 14 (the ViT's patch), at least 56."""
    if image_size is not None and (image_size < 4 * PATCH or image_size % PATCH):
        raise ModelError(f"--image-size {image_size}: SAM 3 needs a multiple of 14 (its ViT's patch), at least 56 "
                         f"(its own is {DEFAULT_SIZE}; multiples of 336, its pretraining size, suit it best)")


def input_size(image_size: int | None) -> int:
    return image_size or DEFAULT_SIZE


def download_help() -> str:
    """What `download --model sam3` says: the weights are gated, and how to get them."""
    return (
        f"SAM 3's weights are gated on the Hugging Face model hub: the labeler does not download them.\n"
        f"  1. Sign in at {HUB_PAGE} and accept Meta's SAM License (access is granted per account).\n"
        f"  2. Download {CHECKPOINT_FILE} from the page's 'Files' tab, or with a token that has access:\n"
        f"       hf download facebook/sam3 {CHECKPOINT_FILE} --local-dir {CHECKPOINT_DIR}\n"
        f"  3. python main.py --model sam3 (it reads {default_checkpoint()}; --checkpoint names another file).\n"
        f"See docs/sam3.md."
    )


def check_checkpoint(checkpoint: str | os.PathLike | None) -> Path | None:
    """The checkpoint path to load (None: untrained weights); fails early when it is missing."""
    if checkpoint is not None and str(checkpoint).lower() == UNTRAINED:
        return None
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    if not path.is_file():
        hint = ("python main.py download --model sam3 says how to get it" if checkpoint is None
                else "check the --checkpoint path")
        raise ModelError(f"checkpoint not found: {path}; {hint}")
    check_checkpoint_file(path)
    return path


def build_tracker(
    checkpoint: str | os.PathLike | None = None,
    image_size: int | None = None,
    device="cpu",
    seed: int = 0,
    architecture: Architecture = SAM3,
):
    """SAM 3's `Sam3TrackerPredictor` with its weights loaded, in eval mode, on `device`.

    checkpoint: the released `sam3.pt` (None: checkpoints/sam3.pt) or "none" for untrained weights
    (initialised from `seed`). image_size: a multiple of 14 (None: 1008).
    """
    import torch

    from . import internals

    check_image_size(image_size)
    path = check_checkpoint(checkpoint)
    size = input_size(image_size)
    weights = read_checkpoint(path) if path is not None else None  # a wrong file is refused before the build
    internals.apply_patches()
    torch.manual_seed(seed)
    with internals.contained():
        predictor = _construct(size, architecture)
        internals.leave_build_autocast(predictor)
    if path is None:
        log.warning(
            "\n" + "!" * 72 + "\n!! UNTRAINED SAM 3 WEIGHTS (--checkpoint none): masks are noise.\n"
            "!! Use this only for tests and benchmarks; real labeling needs sam3.pt:\n"
            "!!   python main.py download --model sam3   (says how to get it)\n" + "!" * 72
        )
    else:
        load_weights(predictor, weights, path)
    return predictor.to(torch.device(device)).eval()


def _construct(size: int, arch: Architecture):
    """sam3 0.1.4's `build_tracker(apply_temporal_disambiguation=True, with_backbone=True)`, at `size`."""
    import warnings

    from sam3.model.decoder import (
        TransformerDecoderLayerv2,
        TransformerEncoderCrossAttention,
    )
    from sam3.model.memory import (
        CXBlock,
        SimpleFuser,
        SimpleMaskDownSampler,
        SimpleMaskEncoder,
    )
    from sam3.model.model_misc import TransformerWrapper
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
    from sam3.model.vitdet import ViT
    from sam3.model.vl_combiner import SAM3VLBackbone
    from sam3.sam.transformer import RoPEAttention

    grid = size // PATCH  # the tracker's feature side (72 at 1008)
    mask_size = grid * 4 * 4  # the mask prompt's side (1152 at 1008)

    # The memory encoder (`_create_tracker_maskmem_backbone`).
    maskmem_backbone = SimpleMaskEncoder(
        out_dim=64,
        position_encoding=PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000,
                                                precompute_resolution=size),
        mask_downsampler=SimpleMaskDownSampler(kernel_size=3, stride=2, padding=1,
                                               interpol_size=[mask_size, mask_size]),
        fuser=SimpleFuser(layer=CXBlock(dim=256, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06,
                                        use_dwconv=True), num_layers=2),
    )
    # Memory attention (`_create_tracker_transformer`).
    self_attention = RoPEAttention(embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1, rope_theta=10000.0,
                                   feat_sizes=[grid, grid], use_fa3=False, use_rope_real=False)
    cross_attention = RoPEAttention(embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1, kv_in_dim=64,
                                    rope_theta=10000.0, feat_sizes=[grid, grid], rope_k_repeat=True, use_fa3=False,
                                    use_rope_real=False)
    encoder_layer = TransformerDecoderLayerv2(
        cross_attention_first=False, activation="relu", dim_feedforward=2048, dropout=0.1, pos_enc_at_attn=False,
        pre_norm=True, self_attention=self_attention, d_model=256, pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False, cross_attention=cross_attention,
    )
    encoder = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[], batch_first=True, d_model=256, frozen=False, pos_enc_at_input=True,
        layer=encoder_layer, num_layers=4, use_act_checkpoint=False,
    )
    transformer = TransformerWrapper(encoder=encoder, decoder=None, d_model=256)
    # The vision backbone (`_create_vision_backbone`, `_create_vit_backbone`, `_create_vit_neck`).
    vit = ViT(
        img_size=size, pretrain_img_size=336, patch_size=PATCH, embed_dim=arch.width, depth=arch.depth,
        num_heads=arch.heads, mlp_ratio=4.625, norm_layer="LayerNorm", drop_path_rate=0.1, qkv_bias=True,
        use_abs_pos=True, tile_abs_pos=True, global_att_blocks=arch.global_blocks, rel_pos_blocks=(), use_rope=True,
        use_interp_rope=True, window_size=arch.window_size, pretrain_use_cls_token=True, retain_cls_token=False,
        ln_pre=True, ln_post=False, return_interm_layers=False, bias_patch_embed=False, compile_mode=None,
    )
    neck = Sam3DualViTDetNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=256, normalize=True, scale=None, temperature=10000,
                                                precompute_resolution=size),
        d_model=256, scale_factors=[4.0, 2.0, 1.0, 0.5], trunk=vit, add_sam2_neck=True,
    )
    backbone = SAM3VLBackbone(scalp=1, visual=neck, text=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without CUDA: "CUDA is not available ... Disabling autocast"
        return Sam3TrackerPredictor(
            image_size=size, num_maskmem=7, backbone=backbone, backbone_stride=PATCH, transformer=transformer,
            maskmem_backbone=maskmem_backbone, multimask_output_in_sam=True, forward_backbone_per_frame_for_eval=True,
            trim_past_non_cond_mem_for_eval=False, multimask_output_for_tracking=True, multimask_min_pt_num=0,
            multimask_max_pt_num=1, always_start_from_first_ann_frame=False, non_overlap_masks_for_mem_enc=False,
            non_overlap_masks_for_output=False, max_cond_frames_in_attn=4, offload_output_to_cpu_for_eval=False,
            sam_mask_decoder_extra_args={
                "dynamic_multimask_via_stability": True,
                "dynamic_multimask_stability_delta": 0.05,
                "dynamic_multimask_stability_thresh": 0.98,
            },
            clear_non_cond_mem_around_input=True, fill_hole_area=0, use_memory_selection=True,
        )


def tracker_weights(state: dict) -> dict:
    """The predictor's state dict from the released layout: `tracker.*` as is, the vision backbone's
    `detector.backbone.vision_backbone.*` as `backbone.vision_backbone.*`; the detector's other parts and the
    text encoder are not used."""
    weights = {k[len(TRACKER_PREFIX):]: v for k, v in state.items() if k.startswith(TRACKER_PREFIX)}
    weights.update({"backbone.vision_backbone." + k[len(BACKBONE_PREFIX):]: v
                    for k, v in state.items() if k.startswith(BACKBONE_PREFIX)})
    return weights


def read_checkpoint(path: Path) -> dict:
    """The tracker's weights in the released `sam3.pt` at `path`; ModelError naming the file and the reason
    otherwise."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        text = str(e).split("WeightsUnpickler error:", 1)[-1]
        reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise ModelError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {reason})") from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {path}: not a state dict (not SAM 3's sam3.pt)")
    weights = tracker_weights(state)
    if not weights:
        raise ModelError(f"checkpoint {path}: no '{TRACKER_PREFIX}' or '{BACKBONE_PREFIX}' weights inside "
                         "(not SAM 3's sam3.pt layout; a SAM 2 checkpoint goes with a SAM 2.1 --model)")
    return weights


def load_weights(predictor, weights: dict, path: Path) -> None:
    """Load `read_checkpoint`'s weights; ModelError naming the file and what doesn't match."""
    own = predictor.state_dict()
    # The ViT's rotary tables (`freqs_cis` buffers) are computed from the input size, not learned: at
    # another size than the checkpoint's they are the ones the model computed for its own.
    for key in [k for k in weights if k.endswith(".freqs_cis") and k in own and weights[k].shape != own[k].shape]:
        weights[key] = own[key]
    problems = {
        "missing keys": [k for k in own if k not in weights],
        "unexpected keys": [k for k in weights if k not in own],
        "shape mismatches": [k for k in own if k in weights and weights[k].shape != own[k].shape],
    }
    if any(problems.values()):
        found = "; ".join(
            f"{what}: {', '.join(keys[:3])}" + (f" … ({len(keys)} in all)" if len(keys) > 3 else "")
            for what, keys in problems.items() if keys
        )
        raise ModelError(f"checkpoint {path} does not match SAM 3's tracker ({found})")
    predictor.load_state_dict(weights)
