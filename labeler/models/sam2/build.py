"""Building SAM 2's video predictor: model configs, checkpoints, devices.

Usage: `predictor = build_predictor("tiny", checkpoint="none", image_size=256, device="cpu")`.
"""

from __future__ import annotations

import logging
import os
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..common import UNTRAINED, ModelError, resolve_device  # noqa: F401  (resolve_device: where callers found it first)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Model name -> SAM 2.1 config (inside the sam2 package) and Meta's published checkpoint file.
MODELS = {
    "tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "small": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "base_plus": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    "large": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
}
DOWNLOAD_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
CHECKPOINT_DIR = Path("checkpoints")


def default_checkpoint(model: str) -> Path:
    """Where `download` puts the checkpoint of `model`: checkpoints/sam2.1_hiera_<model>.pt."""
    return CHECKPOINT_DIR / MODELS[model][1]


def check_checkpoint(model: str, checkpoint: str | os.PathLike | None) -> Path | None:
    """The checkpoint path to load (None for untrained weights); fails early when it is missing."""
    if checkpoint is not None and str(checkpoint).lower() == UNTRAINED:
        return None
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint(model)
    if not path.is_file():
        hint = (
            f"download it with: python main.py download --model {model}"
            if checkpoint is None
            else "check the --checkpoint path"
        )
        raise ModelError(f"checkpoint not found: {path}; {hint}")
    check_checkpoint_file(path)
    return path


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Refuse a file that is no PyTorch checkpoint from its first bytes, before any model is built.

    torch.save writes a zip archive (PyTorch >= 1.6) or, with the legacy format, a pickle, which
    starts with the protocol byte 0x80. A damaged checkpoint of either kind passes; loading it fails.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ModelError(f"checkpoint {path}: cannot be read ({e.strerror or e})") from e
    if not (head.startswith((b"PK\x03\x04", b"\x80")) or zipfile.is_zipfile(path)):
        why = "an empty file" if not head else "neither a zip archive nor a pickle, as torch.save writes"
        raise ModelError(f"not a PyTorch checkpoint: {path} ({why})")


def check_image_size(image_size: int | None) -> None:
    """The model's input size must suit the backbone: None (the model's own) or a multiple of 32, at least 64."""
    if image_size is not None and (image_size < 64 or image_size % 32):
        raise ModelError(f"--image-size {image_size}: must be a multiple of 32, at least 64")


def input_size(model: str, image_size: int | None) -> int:
    """The model's square input size without building it: `image_size`, else its config's (1024 for SAM 2.1)."""
    if image_size:
        return image_size
    import sam2
    from omegaconf import OmegaConf

    return int(OmegaConf.load(Path(sam2.__file__).parent / MODELS[model][0]).model.image_size)


def build_predictor(
    model: str = "tiny",
    checkpoint: str | os.PathLike | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
):
    """SAM 2.1 `SAM2VideoPredictor` for `model` with its checkpoint loaded, in eval mode.

    checkpoint: a file path, None for `default_checkpoint(model)`, or "none" for untrained
    weights (initialised from `seed`, so runs are reproducible; for tests and benchmarks only).
    image_size: the model's square input size (default: the config's, 1024); a multiple of 32.
    """
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    if model not in MODELS:
        raise ModelError(f"--model {model}: unknown model (choose from {', '.join(MODELS)})")
    check_image_size(image_size)
    path = check_checkpoint(model, checkpoint)
    overrides = [f"++model.image_size={image_size}"] if image_size else []
    torch.manual_seed(seed)
    predictor = build_sam2_video_predictor(
        MODELS[model][0], ckpt_path=None, device="cpu", hydra_overrides_extra=overrides
    )
    if path is None:
        log.warning(
            "\n" + "!" * 72 + "\n!! UNTRAINED SAM 2 WEIGHTS (--checkpoint none): masks are noise.\n"
            "!! Use this only for tests and benchmarks; real labeling needs a checkpoint:\n"
            f"!!   python main.py download --model {model}\n" + "!" * 72
        )
    else:
        _load_weights(predictor, path)
    from .internals import skip_unavailable_hole_filling

    skip_unavailable_hole_filling(predictor)
    return predictor.to(torch.device(device)).eval()


def _load_weights(predictor: torch.nn.Module, path: Path) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        # One line: torch wraps the reason of an UnpicklingError in paragraphs of weights_only advice.
        text = str(e).split("WeightsUnpickler error:", 1)[-1]
        reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise ModelError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {reason})") from e
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ModelError(f"checkpoint {path}: no 'model' state dict inside (not a SAM 2 checkpoint)")
    weights, own = state["model"], predictor.state_dict()
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
        raise ModelError(f"checkpoint {path} does not match the chosen --model config ({found})")
    predictor.load_state_dict(weights)


def download_checkpoint(model: str, dest: Path | None = None) -> Path:
    """Fetch Meta's published checkpoint of `model` with a progress bar, a size check and an atomic rename."""
    from tqdm import tqdm

    dest = Path(dest) if dest is not None else default_checkpoint(model)
    url = DOWNLOAD_BASE + MODELS[model][1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            expected = int(response.headers.get("Content-Length") or 0)
            with tqdm(total=expected or None, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        size = partial.stat().st_size
        if expected and size != expected:
            raise ModelError(f"download of {url} incomplete: {size} of {expected} bytes")
        os.replace(partial, dest)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise ModelError(
            f"could not download {url} ({e}).\n"
            "Without network access you can still try the pipeline with untrained weights:\n"
            "  python main.py --headless --prompts assets/demo/prompts.json --checkpoint none --image-size 256"
        ) from e
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return dest
