"""The one place that reaches into SAM 2's internals: inference-state keys, private methods, outputs by position.

SAM 2's video predictor works on a video loaded from a folder. The labeler instead feeds it one
frame at a time (references, then targets), through the same inference state and the same
methods `init_state`, `add_new_points_or_box`, `add_new_mask` and `propagate_in_video` use. That
relies on internals of rf-sam-2 1.0.3, the version tests/models/sam2/test_fidelity.py proves equal to
`SAM2VideoPredictor`; another version stops at import with one message.

`refs` mode: for a target at frame K right after the references, SAM 2's `track_step`
(non-conditioning frame, no prompts) is: assemble the memory of the reference frames and the
object pointers, run memory attention over the target's image features, run the SAM heads. The
memory is the same for every target, so this module

- assembles each object's memory once, with SAM 2's own `_prepare_memory_conditioned_features`
  (its memory-attention call is intercepted to capture the memory it builds);
- projects that memory into each cross-attention layer's keys (with their rotary encoding) and
  values once;
- runs objects guided on the same references as one batch, and computes the first layer's
  self-attention, whose input is the target's image features alone, once for all objects;
- can run several targets in one forward.

The layer arithmetic follows `MemoryAttention.forward` / `MemoryAttentionLayer.forward` /
`RoPEAttention.forward` step by step, using their own submodules (dropout is the identity in
eval mode).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import UsageError

SAM2_DISTRIBUTION, SAM2_VERSION = "rf-sam-2", "1.0.3"


def check_sam2_version(installed: str | None = None) -> None:
    """Stop with one message unless the installed SAM 2 is the version the fidelity tests cover."""
    if installed is None:
        try:
            installed = importlib.metadata.version(SAM2_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
    if installed != SAM2_VERSION:
        raise UsageError(
            f"SAM 2 ({SAM2_DISTRIBUTION}) {installed} is installed, but the labeler relies on internals of "
            f"{SAM2_DISTRIBUTION} {SAM2_VERSION}, the version its fidelity tests cover: "
            f"pip install {SAM2_DISTRIBUTION}=={SAM2_VERSION}"
        )


check_sam2_version()

from sam2.modeling.position_encoding import apply_rotary_enc  # noqa: E402  (after the version check)
from sam2.utils.misc import fill_holes_in_mask_scores  # noqa: E402


def skip_unavailable_hole_filling(predictor) -> None:
    """Turn off SAM 2's hole filling where its CUDA extension is missing (the rf-sam-2 wheel has none).

    Without the extension SAM 2 skips that step anyway, with a long warning on every frame; turning
    it off gives the same masks in silence, and no process-wide warnings filter is needed.
    """
    if importlib.util.find_spec("sam2._C") is None:
        predictor.fill_hole_area = 0


# ----------------------------------------------------------------------------------------------
# The inference state, fed one frame at a time


def new_state(predictor, num_frames: int) -> dict:
    """An empty inference state with the fields `SAM2VideoPredictor.init_state` creates.

    Frames are not loaded from a folder: their backbone features are put into
    `cached_features` by `encode_frame`, one frame at a time.
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


def object_ids(state: dict) -> list[int]:
    """The state's object IDs, in the order SAM 2 added them."""
    return list(state["obj_ids"])


def set_frame_size(state: dict, height: int, width: int) -> None:
    """The original size of the frame being prompted: SAM 2 returns masks at this size."""
    state["video_height"], state["video_width"] = height, width


def encode_frame(state: dict, frame_idx: int, backbone_out: dict) -> None:
    """Put one image's `forward_image` output into the state as frame `frame_idx` (as `_get_image_feature` caches it)."""
    # `_get_image_feature` returns the cached input image too, and every caller discards it.
    state["cached_features"][frame_idx] = (torch.empty(1, 3, 0, 0), backbone_out)


def feature_levels(backbone_out: dict) -> tuple[list[torch.Tensor], list[str]]:
    """What the labeler needs of a `forward_image` output: its (B, C, H, W) feature levels and the
    dtype names of their position encodings (these depend on shapes only, so they are recomputed)."""
    pos = backbone_out["vision_pos_enc"]
    return list(backbone_out["backbone_fpn"]), [str(p.dtype).removeprefix("torch.") for p in pos]


def backbone_output(predictor, levels: list[torch.Tensor], pos_dtypes: list[str]) -> dict:
    """A `forward_image` output rebuilt from `feature_levels`: the position encodings as the FPN neck makes them."""
    encoding = predictor.image_encoder.neck.position_encoding
    pos = [encoding(x).to(getattr(torch, d)) for x, d in zip(levels, pos_dtypes)]
    return {"vision_features": levels[-1], "vision_pos_enc": pos, "backbone_fpn": list(levels)}


def forget_frame_features(state: dict) -> None:
    state["cached_features"] = {}


def prompt_frame(predictor, state: dict, frame_idx: int, obj_id: int, points=None, labels=None, box=None):
    """SAM 2's point/box prompt (coordinates normalised to 0-1) on one frame; returns the object's (H, W) logits."""
    _, obj_ids, masks = predictor.add_new_points_or_box(
        state, frame_idx, obj_id, points=points, labels=labels, box=box, normalize_coords=False
    )
    return masks[obj_ids.index(obj_id), 0]


def clear_object_on_frame(predictor, state: dict, frame_idx: int, obj_id: int) -> None:
    """Forget an object's prompts on a frame, so the next prompt starts from a blank frame."""
    if obj_id in state["obj_id_to_idx"]:
        predictor.clear_all_prompts_in_frame(state, frame_idx, obj_id, need_output=False)


def encode_prompt_memories(predictor, state: dict) -> None:
    """Encode the memories of every prompted frame, as `propagate_in_video` does before tracking."""
    predictor.propagate_in_video_preflight(state)
    for out_dict in state["output_dict_per_obj"].values():
        for out in out_dict["cond_frame_outputs"].values():
            _float_memory(state, out)


def condition_frames(state: dict) -> list[int]:
    """Every frame some object is conditioned on (prompted), sorted."""
    return sorted({t for out in state["output_dict_per_obj"].values() for t in out["cond_frame_outputs"]})


def _float_memory(state: dict, out: dict) -> None:
    """Keep a stored memory in float32 where no autocast runs (precision fp32, on any device).

    SAM 2 stores memories in bf16. Without autocast, memory attention fails on them when no
    float32 object pointer is concatenated alongside (an object tracked on a reference before
    the one it is guided on); with a pointer, torch.cat promotes them to float32 exactly as here.
    Under bf16 autocast SAM 2 runs on them as stored, and so does this.
    """
    features = out["maskmem_features"]
    if (features is not None and features.dtype == torch.bfloat16
            and not torch.is_autocast_enabled(state["device"].type)):
        out["maskmem_features"] = features.float()


def track_frame(predictor, state: dict, frame_idx: int) -> dict[int, tuple[torch.Tensor, float]]:
    """One frame of `propagate_in_video`: per object ID, (1, 1, S/4, S/4) mask logits and the
    object-score logit; each object's memory on this frame is encoded and kept for later frames."""
    outputs = {}
    for obj_idx, obj_id in enumerate(state["obj_ids"]):
        obj_output_dict = state["output_dict_per_obj"][obj_idx]
        out = obj_output_dict["cond_frame_outputs"].get(frame_idx)
        if out is None:
            out, _ = predictor._run_single_frame_inference(
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
            _float_memory(state, out)
            obj_output_dict["non_cond_frame_outputs"][frame_idx] = out
        outputs[obj_id] = (out["pred_masks"], float(out["object_score_logits"].item()))
    return outputs


def forget_old_frames(predictor, state: dict, frame_idx: int) -> None:
    """Drop chain memories no frame after `frame_idx` can reach, so memory stays flat over long runs."""
    p = predictor
    reach = max((p.num_maskmem - 2) * p.memory_temporal_stride_for_eval + 2, p.max_obj_ptrs_in_encoder)
    for out in state["output_dict_per_obj"].values():
        for t in [t for t in out["non_cond_frame_outputs"] if t <= frame_idx - reach]:
            del out["non_cond_frame_outputs"][t]


# ----------------------------------------------------------------------------------------------
# refs mode: a fixed reference memory, assembled and projected once


class _Captured(Exception):
    pass


@dataclass
class ObjectGroup:
    """Objects with the same memory layout (same reference frames), run as one batch.

    keys, values: per memory-attention layer, (B, heads, N_memory, C_head) tensors.
    """

    obj_ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def size(self) -> int:
        return len(self.obj_ids)


def _merged_outputs(per_object: list[dict]) -> dict:
    """Several objects' output dicts (same frames) as one batched output dict."""
    merged = {}
    for storage in ("cond_frame_outputs", "non_cond_frame_outputs"):
        merged[storage] = {}
        for t in per_object[0][storage]:
            outs = [d[storage][t] for d in per_object]
            merged[storage][t] = {
                "maskmem_features": torch.cat([o["maskmem_features"] for o in outs]),
                "maskmem_pos_enc": [torch.cat(p) for p in zip(*(o["maskmem_pos_enc"] for o in outs))],
                "obj_ptr": torch.cat([o["obj_ptr"] for o in outs]),
            }
    return merged


def build_groups(predictor, state: dict, frame_idx: int) -> list[ObjectGroup]:
    """Group the state's objects by memory layout; assemble and project each group's memory once."""
    layouts: dict[tuple, list[int]] = {}
    for obj_idx in range(len(state["obj_ids"])):
        out = state["output_dict_per_obj"][obj_idx]
        layout = (tuple(sorted(out["cond_frame_outputs"])), tuple(sorted(out["non_cond_frame_outputs"])))
        layouts.setdefault(layout, []).append(obj_idx)
    groups = []
    for obj_idxs in layouts.values():
        merged = _merged_outputs([state["output_dict_per_obj"][i] for i in obj_idxs])
        memory, memory_pos, num_ptr_tokens = _capture_memory(predictor, state, frame_idx, merged, len(obj_idxs))
        keys, values = _project_memory(predictor, memory, memory_pos, num_ptr_tokens)
        groups.append(ObjectGroup([state["obj_ids"][i] for i in obj_idxs], keys, values))
    return groups


def _capture_memory(predictor, state: dict, frame_idx: int, output_dict: dict, batch: int):
    """The memory SAM 2 assembles for frame `frame_idx`: (N, B, C_mem) tokens, their positions, pointer count."""
    size = predictor.sam_image_embedding_size
    placeholder = torch.zeros(size * size, batch, predictor.hidden_dim, device=predictor.device)
    captured = {}

    def intercept(module, args, kwargs):
        captured.update(kwargs)
        raise _Captured

    handle = predictor.memory_attention.register_forward_pre_hook(intercept, with_kwargs=True)
    try:
        predictor._prepare_memory_conditioned_features(
            frame_idx=frame_idx, is_init_cond_frame=False, current_vision_feats=[placeholder],
            current_vision_pos_embeds=[placeholder], feat_sizes=[(size, size)], output_dict=output_dict,
            num_frames=state["num_frames"],
        )
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured["memory"], captured["memory_pos"], captured["num_obj_ptr_tokens"]


def _rope_freqs(attn, tokens: int, device) -> torch.Tensor:
    """The attention's rotary frequencies for a square grid of `tokens` (recomputed as RoPEAttention does)."""
    if attn.freqs_cis.shape[0] != tokens:
        side = math.sqrt(tokens)
        attn.freqs_cis = attn.compute_cis(end_x=side, end_y=side)
    attn.freqs_cis = attn.freqs_cis.to(device)
    return attn.freqs_cis


def _project_memory(predictor, memory, memory_pos, num_ptr_tokens):
    """Each cross-attention layer's keys (rotary-encoded but for the pointer tokens) and values."""
    ma = predictor.memory_attention
    memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)  # batch first
    query_tokens = predictor.sam_image_embedding_size ** 2
    keys, values = [], []
    for layer in ma.layers:
        attn = layer.cross_attn_image
        k = attn.k_proj(memory + memory_pos if layer.pos_enc_at_cross_attn_keys else memory)
        v = attn.v_proj(memory)
        k, v = attn._separate_heads(k, attn.num_heads), attn._separate_heads(v, attn.num_heads)
        num_rope = k.size(-2) - num_ptr_tokens
        queries = k.new_zeros(k.shape[0], k.shape[1], query_tokens, k.shape[-1])  # sets the repeat factor
        _, k[:, :, :num_rope] = apply_rotary_enc(
            queries, k[:, :, :num_rope], freqs_cis=_rope_freqs(attn, query_tokens, k.device),
            repeat_freqs_k=attn.rope_k_repeat,
        )
        keys.append(k)
        values.append(v)
    return keys, values


def _self_attention(layer, tgt, pos):
    tgt2 = layer.norm1(tgt)
    q = k = tgt2 + pos if layer.pos_enc_at_attn else tgt2
    return tgt + layer.self_attn(q, k, v=tgt2)


def _cross_attention(layer, tgt, pos, keys, values, repeats: int):
    attn = layer.cross_attn_image
    tgt2 = layer.norm2(tgt)
    q = attn._separate_heads(attn.q_proj(tgt2 + pos if layer.pos_enc_at_cross_attn_queries else tgt2), attn.num_heads)
    q, _ = apply_rotary_enc(q, q[:, :, :0], freqs_cis=_rope_freqs(attn, q.shape[-2], q.device))
    out = F.scaled_dot_product_attention(q, keys.repeat(repeats, 1, 1, 1), values.repeat(repeats, 1, 1, 1))
    return tgt + attn.out_proj(attn._recombine_heads(out))


def attend(predictor, curr: torch.Tensor, curr_pos: torch.Tensor, group: ObjectGroup) -> torch.Tensor:
    """Memory attention of T targets' features (HW, T, C) to the group's memory; (HW, T*B, C), target-major."""
    ma = predictor.memory_attention
    targets, batch = curr.shape[1], group.size
    out = curr + 0.1 * curr_pos if ma.pos_enc_at_input else curr
    out, pos = out.transpose(0, 1), curr_pos.transpose(0, 1)
    for i, layer in enumerate(ma.layers):
        if i == 0:
            # The first self-attention sees only the target's features: once per target, not per object.
            out = _self_attention(layer, out, pos).repeat_interleave(batch, dim=0)
            pos = pos.repeat_interleave(batch, dim=0)
        else:
            out = _self_attention(layer, out, pos)
        out = _cross_attention(layer, out, pos, group.keys[i], group.values[i], targets)
        out = out + layer.linear2(layer.activation(layer.linear1(layer.norm3(out))))
    return ma.norm(out).transpose(0, 1)


def track_targets(predictor, backbone_out: dict, groups: list[ObjectGroup]) -> dict[int, tuple]:
    """Run T targets (their `forward_image` output, batch T) through every group.

    Returns {obj_id: ((T, 1, S/4, S/4) mask logits, (T,) object-score logits)}.
    """
    _, feats, pos_embeds, feat_sizes = predictor._prepare_backbone_features(backbone_out)
    targets = backbone_out["backbone_fpn"][0].shape[0]
    results = {}
    for group in groups:
        b = group.size
        high_res = [
            x.repeat_interleave(b, dim=1).permute(1, 2, 0).view(targets * b, x.size(2), *s)
            for x, s in zip(feats[:-1], feat_sizes[:-1])
        ]
        pix = attend(predictor, feats[-1], pos_embeds[-1], group)
        h, w = feat_sizes[-1]
        pix = pix.permute(1, 2, 0).view(targets * b, predictor.hidden_dim, h, w)
        sam_outputs = predictor._forward_sam_heads(
            backbone_features=pix, point_inputs=None, mask_inputs=None, high_res_features=high_res,
            multimask_output=predictor._use_multimask(False, None),
        )
        low_res_masks, scores = sam_outputs[3], sam_outputs[6]
        if predictor.fill_hole_area > 0:  # as `_run_single_frame_inference` post-processes
            low_res_masks = fill_holes_in_mask_scores(low_res_masks, predictor.fill_hole_area)
        low_res_masks = low_res_masks.view(targets, b, *low_res_masks.shape[1:])
        scores = scores.view(targets, b)
        for j, obj_id in enumerate(group.obj_ids):
            results[obj_id] = (low_res_masks[:, j], scores[:, j])
    return results
