"""The model-backend interface: what the batch, the feature cache, the Ray worker, the review window and the
selector need from a model, and the registry that builds one from its settings.

A backend is built from `ModelSettings` and holds one model on one device. It turns images into model
inputs (`prepare`, on reading threads) and features (`forward`), splits features into per-image cache
entries and joins them back (`split_features`, `join_features`), conditions on guided references
(`condition`, giving a `TargetLabeler`), and previews one object's mask on one reference (`preview`).
`encode` puts the feature cache in front of `forward` for every backend.

SAM 2 (`models.sam2.backend.Sam2Backend`) is the first implementation. A new one is a class with the
attributes and methods of `ModelBackend` (plus the class-level `models`, `check` and `input_size`),
registered with `register_backend`.

Usage:
    backend = build_backend(ModelSettings("tiny", checkpoint="none", image_size=256, device="cpu"))
    labeler = backend.condition(prompts, memory="refs")
    detections = labeler.label(rgb)                       # one Detection per object ID
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import defaults
from ..errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..prompts.prompt_set import PromptSet
    from ..types.detections import Detection
    from ..types.guides import ObjectGuides

MEMORY_MODES = ("refs", "chain")


@dataclass(frozen=True)
class ModelSettings:
    """Which model to build, from which weights, at which input size, on which device.

    model: a registered model name (SAM 2.1: tiny, small, base_plus, large). checkpoint: a file, None
    for the backend's default file, or "none" for untrained weights (tests and benchmarks).
    image_size: the square input side in pixels (None: the model's own). device: auto, cpu, cuda or mps.
    precision: auto, bf16 or fp32 (`models.common.resolve_precision` decides what auto is on the device).
    """

    model: str = defaults.MODEL
    checkpoint: str | os.PathLike | None = defaults.CHECKPOINT
    image_size: int | None = defaults.IMAGE_SIZE
    device: str = defaults.DEVICE
    precision: str = defaults.PRECISION


class TargetLabeler(Protocol):
    """A model conditioned on guided references: labels targets ((H, W, 3) uint8 RGB)."""

    memory: str  # "refs": targets independent; "chain": targets are one pseudo-video, labeled in order
    features: Any  # the FeatureCache it reads and fills, or None

    @property
    def object_ids(self) -> list[int]: ...

    def label_many(self, rgbs: list[np.ndarray], image_hashes: list[str] | None = None,
                   inputs: list[torch.Tensor] | None = None) -> list[list[Detection]]:
        """One `Detection` per object ID for each target, masks at the target's size. image_hashes key the
        feature cache; inputs are the targets' `prepare` output, made ahead."""

    def label(self, rgb: np.ndarray) -> list[Detection]: ...


class Preview(Protocol):
    """One reference image, encoded once: the mask each object's guides condition the batch on."""

    def mask(self, obj: ObjectGuides) -> np.ndarray:
        """(H, W) bool, the same mask the batch conditions object `obj.id` on."""


class ModelBackend(Protocol):
    """One model on one device (see the module docstring)."""

    settings: ModelSettings
    image_size: int  # the square input side, pixels
    device: torch.device
    precision: str  # what runs: "bf16" (bfloat16 autocast) or "fp32", `settings.precision` resolved on the device

    def identity(self) -> dict:
        """What features depend on besides the image (model, weights' content, size, device, precision, code
        versions): JSON-serialisable, the feature cache's key."""

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> the model's input for it (CPU; thread-safe: reading threads call it)."""

    def forward(self, inputs: list[torch.Tensor]) -> Any:
        """The image encoder's output for a batch of `prepare` outputs."""

    def split_features(self, features: Any) -> list[tuple[list[torch.Tensor], list[str]]]:
        """Per image of a `forward` output: (tensors of batch size 1, notes), what a cache entry stores."""

    def join_features(self, entries: list[dict]) -> Any:
        """A `forward` output rebuilt from cache entries ({"levels": tensors, "pos_dtypes": notes}), on the device."""

    def condition(self, prompts: PromptSet, memory: str = "refs", threshold: float = 0.0,
                  num_targets: int | None = None, features=None) -> TargetLabeler:
        """The model conditioned on the prompts' guided references (chain mode: for `num_targets` targets)."""

    def preview(self, rgb: np.ndarray) -> Preview:
        """A preview of one reference image (encoded here, without the feature cache)."""


def encode(backend: ModelBackend, rgbs: list, features=None, image_hashes: list[str] | None = None,
           inputs: list | None = None):
    """`backend.forward` of the images, read from the feature cache when it holds all of them.

    features: a `FeatureCache` (or None); image_hashes: the images' content hashes, its keys. When any
    image misses, the whole batch is encoded, exactly as without the cache, and stored. inputs: the
    images' `backend.prepare` output, where a reading thread made them ahead.
    """
    keys = entries = None
    if features is not None and features.enabled and image_hashes is not None:
        # Checked on the CPU: an image's features are bit-identical whatever the batch; a GPU
        # picks kernels by batch size, so there the batch size is part of the key.
        batch = None if backend.device.type == "cpu" else len(rgbs)
        keys = [features.key(h, batch) for h in image_hashes]
        entries = [features.load(k) for k in keys]
        if all(e is not None for e in entries):
            return backend.join_features(entries)
    if inputs is None:
        inputs = [backend.prepare(rgb) for rgb in rgbs]
    out = backend.forward(inputs)
    if keys is not None:
        for key, entry, (tensors, notes) in zip(keys, entries, backend.split_features(out)):
            if entry is None:
                features.store(key, tensors, notes)
    return out


# Backend family -> "module:class"; model name -> family. Imported on first use, so naming models costs nothing.
_BACKENDS: dict[str, str] = {"sam2": "labeler.models.sam2.backend:Sam2Backend",
                             "sam3": "labeler.models.sam3.backend:Sam3Backend"}  # SAM 3's tracker (docs/sam3.md)
_MODELS: dict[str, str] = {"sam3": "sam3"}


def register_backend(family: str, target: str, models: list[str]) -> None:
    """Make `models` (names for `--model`) build with the backend class at `target` ("module:class")."""
    _BACKENDS[family] = target
    _MODELS.update({m: family for m in models})


def model_names() -> list[str]:
    """Every registered model name, SAM 2's first."""
    from .sam2.build import MODELS

    return [*MODELS, *(m for m in _MODELS if m not in MODELS)]


def backend_class(model: str) -> type:
    """The backend class that builds `model`; UsageError naming the choices for an unknown one."""
    from .sam2.build import MODELS

    family = "sam2" if model in MODELS else _MODELS.get(model)
    if family is None:
        raise UsageError(f"--model {model}: unknown model (choose from {', '.join(model_names())})")
    module, name = _BACKENDS[family].split(":")
    return getattr(importlib.import_module(module), name)


def check_model(settings: ModelSettings) -> Path | None:
    """Check the settings before anything is built: the input size and the checkpoint (the path it loads,
    None for untrained weights); UsageError saying what is wrong."""
    return backend_class(settings.model).check(settings)


def input_size(settings: ModelSettings) -> int:
    """The model's square input side, without building it."""
    return backend_class(settings.model).input_size(settings)


def build_backend(settings: ModelSettings, **kwargs) -> ModelBackend:
    """The backend for `settings.model`, with its weights loaded, in eval mode, on `settings.device`."""
    return backend_class(settings.model)(settings, **kwargs)


def download(model: str) -> Path:
    """`python main.py download`: fetch SAM 2.1's published checkpoint of `model`; for sam3 (gated on the model
    hub) a ModelError saying how to get the weights."""
    if model == "sam3":
        from .common import ModelError
        from .sam3.build import download_help

        raise ModelError(download_help())
    from .sam2.build import download_checkpoint

    return download_checkpoint(model)
