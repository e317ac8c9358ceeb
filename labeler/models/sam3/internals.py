"""The one place that reaches into SAM 3's private API: its version, its CPU patches, torch's global state.

The labeler relies on internals of the `sam3` 0.1.4 wheel (PyPI), the version
tests/models/sam3/test_sam3_fidelity.py proves the labeler equal to `Sam3TrackerPredictor` on; another
version stops at import with one message.

- **Global state.** `import sam3` turns TF32 on on Ampere and newer GPUs (`model_builder._setup_tf32`);
  `Sam3TrackerPredictor.__init__` enters a CUDA bf16 autocast that is never left; every `Attention.forward`
  switches the three CUDA SDPA back ends on. `contained()` snapshots torch's global switches and puts
  them back: the import, the build and every call into SAM 3 run inside it, and the predictor's autocast
  is left right after it is built (`leave_build_autocast`).
  The root logger's handlers are put back after the import (sam3 logs on it at import).
- **CPU patches.** SAM 3's tracker hard-codes CUDA in a few places. Each patch below rewrites one function's
  source text (a literal substitution), after checking that the source is exactly the one of sam3 0.1.4
  (its SHA-256); anything else stops with one message naming the version. On CUDA the rewritten functions
  do what the originals do.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import inspect
import logging
import textwrap
import warnings

import torch

from ...errors import UsageError

SAM3_DISTRIBUTION, SAM3_VERSION = "sam3", "0.1.4"
INSTALL = f"python -m pip install --no-deps {SAM3_DISTRIBUTION}=={SAM3_VERSION} (docs/sam3.md)"


def check_sam3_version(installed: str | None = None) -> None:
    """Stop with one message unless the installed sam3 is the version the fidelity tests cover."""
    if installed is None:
        try:
            installed = importlib.metadata.version(SAM3_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
    if installed != SAM3_VERSION:
        raise UsageError(
            f"--model sam3: SAM 3 ({SAM3_DISTRIBUTION}) {installed} is installed, but the labeler relies on internals "
            f"of {SAM3_DISTRIBUTION} {SAM3_VERSION}, the version its fidelity tests cover: {INSTALL}"
        )


def global_state() -> dict:
    """torch's process-wide switches SAM 3 is known to touch (and the thread's autocast state)."""
    return {
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "flash_sdp": torch.backends.cuda.flash_sdp_enabled(),
        "math_sdp": torch.backends.cuda.math_sdp_enabled(),
        "mem_efficient_sdp": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "autocast": {d: (torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in ("cpu", "cuda")},
        "default_dtype": torch.get_default_dtype(),
        "num_threads": torch.get_num_threads(),
    }


def _restore(state: dict) -> None:
    torch.backends.cuda.matmul.allow_tf32 = state["cuda.matmul.allow_tf32"]
    torch.backends.cudnn.allow_tf32 = state["cudnn.allow_tf32"]
    torch.set_float32_matmul_precision(state["float32_matmul_precision"])
    torch.backends.cuda.enable_flash_sdp(state["flash_sdp"])
    torch.backends.cuda.enable_math_sdp(state["math_sdp"])
    torch.backends.cuda.enable_mem_efficient_sdp(state["mem_efficient_sdp"])
    for device, (enabled, dtype) in state["autocast"].items():
        torch.set_autocast_enabled(device, enabled)
        torch.set_autocast_dtype(device, dtype)
    torch.set_default_dtype(state["default_dtype"])
    torch.set_num_threads(state["num_threads"])


@contextlib.contextmanager
def contained():
    """Run SAM 3 code; afterwards torch's global switches (`global_state`) are as they were before."""
    before = global_state()
    try:
        yield
    finally:
        _restore(before)


def leave_build_autocast(predictor) -> None:
    """Leave the CUDA bf16 autocast `Sam3TrackerPredictor.__init__` entered "for the entire model process".

    The labeler decides the precision itself (`--precision`: autocast around its own calls), as for SAM 2.
    """
    context = getattr(predictor, "bf16_context", None)
    if context is not None:
        context.__exit__(None, None, None)
        predictor.bf16_context = None


check_sam3_version()

_root_handlers = logging.root.handlers[:]
with contained(), warnings.catch_warnings():
    # On a machine without CUDA, sam3's modules warn at import that their CUDA autocast decorators are
    # disabled, and torch.jit.script is deprecated: nothing the labeler uses.
    warnings.simplefilter("ignore")
    import sam3  # noqa: F401  (runs sam3.model_builder: TF32 on, undone by `contained`)
    from sam3.model import position_encoding as _position_encoding
    from sam3.model import sam3_tracker_base as _tracker_base
    from sam3.model import sam3_tracking_predictor as _tracking_predictor
# sam3/perflib/nms.py logs on the root logger at import, which gives it a stderr handler (logging.basicConfig):
# every log line of the labeler would then be printed twice.
logging.root.handlers[:] = _root_handlers


# ----------------------------------------------------------------------------------------------
# CPU patches: (class, method, [(old, new)], upstream reference)

_PATCHES = [
    (_position_encoding.PositionEmbeddingSine, "__init__",
     [('device="cuda"', 'device="cuda" if torch.cuda.is_available() else "cpu"'),
      # the rewritten function is no longer defined in the class body, so super() has no cell
      ("super().__init__()", "nn.Module.__init__(self)")],
     "sam3 issue #587 (open PRs #588, #592): the precomputed position encodings are made on CUDA"),
    (_tracker_base.Sam3TrackerBase, "_prepare_memory_conditioned_features",
     [('prev["maskmem_features"].cuda(non_blocking=True)', 'prev["maskmem_features"].to(device, non_blocking=True)'),
      ('prev["maskmem_pos_enc"][-1].cuda()', 'prev["maskmem_pos_enc"][-1].to(device)')],
     "sam3 PR #487: memories are moved to CUDA in the memory conditioning step"),
    (_tracker_base.Sam3TrackerBase, "_get_tpos_enc",
     [("torch.tensor(rel_pos_list).pin_memory()",
       "(torch.tensor(rel_pos_list).pin_memory() if torch.device(device).type == 'cuda' else torch.tensor(rel_pos_list))")],
     "sam3 issue #587 (CPU inference): pinned memory needs an accelerator"),
    (_tracking_predictor.Sam3TrackerPredictor, "init_state",
     [('inference_state["storage_device"] = torch.device("cuda")', 'inference_state["storage_device"] = self.device')],
     "sam3 issue #587 (CPU inference): init_state keeps the state on CUDA"),
    (_tracking_predictor.Sam3TrackerPredictor, "_get_image_feature",
     [('inference_state["images"][frame_idx].cuda().float()',
       'inference_state["images"][frame_idx].to(self.device).float()')],
     "sam3 issue #587 (CPU inference): frames are moved to CUDA to be encoded"),
    (_tracking_predictor.Sam3TrackerPredictor, "add_new_points_or_box",
     [('prev_out["pred_masks"].cuda(non_blocking=True)',
       'prev_out["pred_masks"].to(inference_state["device"], non_blocking=True)')],
     "sam3 issue #587 (CPU inference): the previous mask logits are moved to CUDA"),
]
# sam3 0.1.4's sources of the patched functions, as `inspect.getsource` gives them (dedented).
_SOURCE_SHA256 = {
    "PositionEmbeddingSine.__init__": "adb2c948a6239f9421b5e87578a1ff66a82df6074dbc938b581ae243da0e099b",
    "Sam3TrackerBase._prepare_memory_conditioned_features": "2978864a584c35a273e181ba0bde30cb99cbff5a2ab30000290fbad0128c9c33",
    "Sam3TrackerBase._get_tpos_enc": "9320b17395f641342becd18e0b1eb4a9cfbfb62f122fba09f0c9c4d8d1075393",
    "Sam3TrackerPredictor.init_state": "8cdc1df3a5837b3687ae8d6822bd0441903fcaa1d0a1e9e45c8e6bf65a374e54",
    "Sam3TrackerPredictor._get_image_feature": "364d62bedf1c0c045ea8fb83a64211dc412abea6756af2706d2ed2402196143d",
    "Sam3TrackerPredictor.add_new_points_or_box": "771b3142954d3cb015f1ef94425f6f8f699e63c44e0f8a6671a7091d770d0d72",
}


def source_sha256(cls, name: str) -> str:
    """SHA-256 of a method's dedented source text."""
    return hashlib.sha256(textwrap.dedent(inspect.getsource(getattr(cls, name))).encode()).hexdigest()


def _mismatch(what: str, why: str) -> UsageError:
    return UsageError(
        f"--model sam3: {what} in the installed sam3 is not sam3 {SAM3_VERSION}'s ({why}); the labeler patches "
        f"that function and relies on sam3 {SAM3_VERSION}, the version its fidelity tests cover: {INSTALL}"
    )


def _apply(cls, name: str, replacements: list[tuple[str, str]], reference: str) -> None:
    original = getattr(cls, name)
    if getattr(original, "_labeler_patch", None):
        return
    what = f"{cls.__name__}.{name}"
    source = textwrap.dedent(inspect.getsource(original))
    if hashlib.sha256(source.encode()).hexdigest() != _SOURCE_SHA256[what]:
        raise _mismatch(what, "its source differs")
    for old, new in replacements:
        if source.count(old) != 1:
            raise _mismatch(what, f"{old!r} is not in it once")
        source = source.replace(old, new)
    namespace: dict = {}
    exec(compile(source, f"<sam3 {what}, patched by labeler: {reference}>", "exec"),
         inspect.unwrap(original).__globals__, namespace)
    patched = namespace[name]
    patched._labeler_patch = reference
    patched.__qualname__ = original.__qualname__
    setattr(cls, name, patched)


def apply_patches() -> None:
    """Make SAM 3's tracker run on any device (each patch checks the source it rewrites; see the module docstring)."""
    for cls, name, replacements, reference in _PATCHES:
        _apply(cls, name, replacements, reference)


# ----------------------------------------------------------------------------------------------
# The inference state, fed one frame at a time (one state per object, image features shared)


def new_state(predictor, num_frames: int, cached_features: dict) -> dict:
    """`init_state` for a pseudo-video of `num_frames` frames whose image features are put into the shared
    `cached_features` by `encode_frame` (no frames are loaded)."""
    return predictor.init_state(num_frames=num_frames, cached_features=cached_features)


def encode_frame(cached_features: dict, frame_idx: int, backbone_out: dict) -> None:
    """One image's `forward_image` output as frame `frame_idx`, as `_get_image_feature` caches it (its cached
    input image is only expanded and handed to the memory encoder, which doesn't read it)."""
    cached_features[frame_idx] = (torch.empty(1, 3, 0, 0, device=backbone_out["backbone_fpn"][0].device), backbone_out)


def split_backbone_output(backbone_out: dict) -> list[dict]:
    """A batch's `forward_image` output as one output per image (batch size 1)."""
    batch = backbone_out["backbone_fpn"][0].shape[0]
    return [{key: [x[j : j + 1] for x in backbone_out[key]] if isinstance(backbone_out[key], list)
             else backbone_out[key][j : j + 1] for key in ("backbone_fpn", "vision_pos_enc", "vision_features")}
            for j in range(batch)]


def feature_levels(backbone_out: dict) -> tuple[list[torch.Tensor], list[str]]:
    """The (B, C, H, W) feature levels of a `forward_image` output and the dtypes of their position encodings
    (these depend on shapes only, so they are recomputed by `backbone_output`)."""
    pos = backbone_out["vision_pos_enc"]
    return list(backbone_out["backbone_fpn"]), [str(p.dtype).removeprefix("torch.") for p in pos]


def backbone_output(predictor, levels: list[torch.Tensor], pos_dtypes: list[str]) -> dict:
    """A `forward_image` output rebuilt from `feature_levels`: position encodings as the neck makes them."""
    encoding = predictor.backbone.vision_backbone.position_encoding
    pos = [encoding(x).to(getattr(torch, d)) for x, d in zip(levels, pos_dtypes)]
    return {"vision_features": levels[-1], "vision_pos_enc": pos, "backbone_fpn": list(levels)}


def set_frame_size(state: dict, height: int, width: int) -> None:
    """The original size of the frame being prompted: SAM 3 returns its masks at this size."""
    state["video_height"], state["video_width"] = height, width


def prompt_frame(predictor, state: dict, frame_idx: int, obj_id: int, points=None, labels=None, box=None):
    """SAM 3's point/box prompt (0-1 relative coordinates, as it takes them) on one frame; (H, W) logits."""
    _, obj_ids, _, masks = predictor.add_new_points_or_box(state, frame_idx, obj_id, points=points, labels=labels,
                                                           box=box, rel_coordinates=True)
    return masks[obj_ids.index(obj_id), 0]


def prompt_mask(predictor, state: dict, frame_idx: int, obj_id: int, mask: torch.Tensor) -> None:
    predictor.add_new_mask(state, frame_idx, obj_id, mask)


def encode_prompt_memories(predictor, state: dict) -> None:
    """Encode the memories of every prompted frame, as `propagate_in_video(..., propagate_preflight=True)` does."""
    predictor.propagate_in_video_preflight(state)


def condition_frames(state: dict) -> list[int]:
    return sorted(state["output_dict"]["cond_frame_outputs"])


def propagate(predictor, state: dict, first: int, last: int, run_mem_encoder: bool = True) -> dict:
    """`propagate_in_video` over frames first..last: {frame: ((1, 1, h, w) low-res mask logits, score logit)}."""
    out = {}
    for frame_idx, _, low_res, _, scores in predictor.propagate_in_video(
            state, first, last - first, False, tqdm_disable=True, run_mem_encoder=run_mem_encoder):
        out[frame_idx] = (low_res[0:1], float(scores[0].item()))
    return out


def forget_frame_output(state: dict, frame_idx: int) -> None:
    """Forget what tracking frame `frame_idx` stored (refs mode: a target leaves no memory behind)."""
    state["output_dict"]["non_cond_frame_outputs"].pop(frame_idx, None)
    for out in state["output_dict_per_obj"].values():
        out["non_cond_frame_outputs"].pop(frame_idx, None)
    state["frames_already_tracked"].pop(frame_idx, None)


def forget_old_frames(predictor, state: dict, frame_idx: int) -> None:
    """Drop chain memories no frame after `frame_idx` can reach, so memory stays flat over long runs.

    Without memory selection a frame reaches (num_maskmem - 1) frames back for memories and
    max_obj_ptrs_in_encoder - 1 for pointers. With it (SAM 3's default, `frame_filter`), memories and pointers
    come from the most recent frames whose memory score passes `mf_threshold`, at most
    max_obj_ptrs_in_encoder - 1 of them, plus the frame before: those are kept too.
    """
    p = predictor
    reach = max((p.num_maskmem - 2) * p.memory_temporal_stride_for_eval + 2, p.max_obj_ptrs_in_encoder)
    non_cond = state["output_dict"]["non_cond_frame_outputs"]
    keep = {t for t in non_cond if t > frame_idx - reach}
    if p.use_memory_selection:
        valid = sorted((t for t, o in non_cond.items() if "eff_iou_score" in o and o["eff_iou_score"] > p.mf_threshold),
                       reverse=True)
        keep.update(valid[: p.max_obj_ptrs_in_encoder])
    for outputs in [state["output_dict"], *state["output_dict_per_obj"].values()]:
        for t in [t for t in outputs["non_cond_frame_outputs"] if t not in keep]:
            del outputs["non_cond_frame_outputs"][t]
