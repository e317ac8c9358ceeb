"""SAM 2.1 as a model backend (`models.backend.ModelBackend`): its video predictor, built from `ModelSettings`.

Usage:
    backend = Sam2Backend(ModelSettings("tiny", checkpoint="none", image_size=256, device="cpu"))
    labeler = backend.condition(prompts)          # a Sam2TargetLabeler
    mask = backend.preview(rgb).mask(ObjectGuides(1, box=(10, 10, 80, 60)))
"""

from __future__ import annotations

from pathlib import Path

from ..backend import ModelSettings
from ..common import resolve_device, resolve_precision
from .build import (
    MODELS,
    build_predictor,
    check_checkpoint,
    check_image_size,
    input_size,
)


class Sam2Backend:
    """SAM 2.1's `SAM2VideoPredictor` (`self.predictor`) on one device.

    predictor: one already built with these settings, to reuse (the review window's, tests'); otherwise it
    is built here, with untrained weights initialised from `seed` when the checkpoint is "none".
    """

    family = "sam2"
    title = "SAM 2.1"  # what the log calls it: "SAM 2.1 tiny on cpu"
    models = tuple(MODELS)

    @staticmethod
    def check(settings: ModelSettings) -> Path | None:
        """The checkpoint this loads (None: untrained); UsageError for a bad size or checkpoint."""
        check_image_size(settings.image_size)
        return check_checkpoint(settings.model, settings.checkpoint)

    @staticmethod
    def input_size(settings: ModelSettings) -> int:
        return input_size(settings.model, settings.image_size)

    def __init__(self, settings: ModelSettings, predictor=None, seed: int = 0):
        self.settings = settings
        self.checkpoint = self.check(settings)
        self.seed = seed
        device = resolve_device(settings.device) if predictor is None else predictor.device
        self.precision = resolve_precision(settings.precision, device)  # "bf16" or "fp32": what runs
        if predictor is None:
            predictor = build_predictor(settings.model, settings.checkpoint, settings.image_size, device, seed)
        self.predictor = predictor
        self.image_size = predictor.image_size
        self.device = predictor.device

    def identity(self) -> dict:
        import PIL
        import torch

        from ...utils.hashing import content_hash
        from .internals import SAM2_VERSION

        return {
            "model": self.settings.model, "image_size": self.image_size, "device": self.device.type,
            # The names the cache used before --precision (bf16 on CUDA, float32 elsewhere): same keys as then.
            "precision": "bf16-autocast" if self.precision == "bf16" else "float32",
            "weights": content_hash(self.checkpoint) if self.checkpoint else f"untrained, seed {self.seed}",
            "torch": torch.__version__, "sam2": SAM2_VERSION, "pillow": PIL.__version__,
        }

    def prepare(self, rgb):
        """(3, S, S) float32: resized and normalised exactly as SAM 2's frame loader does."""
        from .tracker import to_model_input

        return to_model_input(rgb, self.image_size)

    def forward(self, inputs: list):
        """SAM 2's `forward_image` output for a batch of `prepare` outputs."""
        import torch

        return self.predictor.forward_image(torch.stack(inputs).to(self.device))

    def split_features(self, features: dict) -> list[tuple[list, list[str]]]:
        """Per image: its three feature levels (after the mask decoder's high-resolution projections) and the
        dtypes of their position encodings, which depend on shapes only and are recomputed on joining."""
        from .internals import feature_levels

        levels, pos_dtypes = feature_levels(features)
        return [([level[j : j + 1] for level in levels], pos_dtypes) for j in range(levels[0].shape[0])]

    def join_features(self, entries: list[dict]) -> dict:
        import torch

        from .internals import backbone_output

        levels = [torch.cat(level).to(self.device) for level in zip(*(e["levels"] for e in entries))]
        return backbone_output(self.predictor, levels, entries[0]["pos_dtypes"])

    def condition(self, prompts, memory: str = "refs", threshold: float = 0.0, num_targets: int | None = None,
                  features=None):
        from .tracker import Sam2TargetLabeler

        return Sam2TargetLabeler(self, prompts, memory=memory, threshold=threshold, num_targets=num_targets,
                                 features=features)

    def preview(self, rgb):
        from .tracker import ReferencePreview

        return ReferencePreview(self, rgb)
