"""What every model backend shares: the error a model that can't be built raises, devices and precisions,
and a tracker's raw per-object output turned into detections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..types.detections import Detection


DEVICES = ("auto", "cpu", "cuda", "mps")  # --device: auto picks cuda, then mps, then cpu
UNTRAINED = "none"  # --checkpoint none: untrained weights, for tests


class ModelError(UsageError):
    """A model that can't be built: missing, corrupt or mismatched checkpoint, unknown device."""


@dataclass
class ObjectOutput:
    """A tracker's raw output for one object on one frame: (1, 1, h, w) low-res mask logits (SAM 2: S/4 at input
    size S) and the object-score logit."""

    mask_logits: torch.Tensor
    score_logit: float


def detections(rgb: np.ndarray, outputs: dict[int, ObjectOutput], threshold: float,
               classes: dict[int, str]) -> list[Detection]:
    """One `Detection` per object of `outputs`, its mask at the (H, W, 3) target's own size; present when the
    score logit passes `threshold` and the mask is not empty."""
    import torch
    import torch.nn.functional as F

    from ..types.detections import Detection
    from ..types.guides import class_name

    if not outputs:
        return []
    height, width = rgb.shape[:2]
    # Upsampled as SAM 2's and SAM 3's `_get_orig_video_res_output` do, all objects in one call: bilinear
    # works on each channel alone, so each mask has the same bits.
    logits = torch.cat([out.mask_logits for out in outputs.values()], dim=1).float()
    masks = (F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0] > 0).cpu().numpy()
    return [Detection(obj_id, out.score_logit, mask, out.score_logit > threshold and bool(mask.any()),
                      class_name(classes, obj_id)) for (obj_id, out), mask in zip(outputs.items(), masks)]


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must be available."""
    import torch  # here, not at the top: the command line answers argument errors without torch (3 s)

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda or name == "mps" and not mps:
        raise ModelError(f"--device {name}: not available on this machine (try --device auto)")
    if name not in ("cpu", "cuda", "mps"):
        raise ModelError(f"--device {name}: unknown device (auto, cpu, cuda or mps)")
    return torch.device(name)


PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AMX-BF16 or AVX512-BF16), from its instruction-set flags.

    torch's own query (`torch.cpu.get_capabilities`, where this torch has it), else Linux's /proc/cpuinfo
    flags; False where neither answers. Other CPUs (ARM's bf16 included, unmeasured here) emulate bf16,
    which is slower than float32.
    """
    import torch

    query = getattr(torch.cpu, "get_capabilities", None)
    if query is not None:
        try:
            caps = query()
            return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))
        except Exception:  # a torch whose cpuinfo can't read this CPU: ask the kernel
            pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device | str) -> str:
    """`--precision` on `device` -> "bf16" (bfloat16 autocast) or "fp32", the one place that decides.

    auto: bf16 on CUDA (as SAM 2's own examples run) and on CPUs with native bf16 (`cpu_has_native_bf16`),
    fp32 elsewhere. MPS: fp32 (bf16 autocast there is unmeasured). bf16 and fp32 are taken as given.
    """
    if name not in PRECISIONS:
        raise UsageError(f"--precision {name}: unknown precision (auto, bf16 or fp32)")
    if name != "auto":
        return name
    kind = getattr(device, "type", device)
    if kind == "cuda" or kind == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"
