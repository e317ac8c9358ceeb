"""SAM 3's tracker as a model backend (`models.backend.ModelBackend`), built from `ModelSettings`.

Usage:
    backend = Sam3Backend(ModelSettings("sam3", checkpoint="sam3.pt", image_size=1008, device="cpu"))
    labeler = backend.condition(prompts)          # a Sam3TargetLabeler
    mask = backend.preview(rgb).mask(ObjectGuides(1, box=(10, 10, 80, 60)))
"""

from __future__ import annotations

from pathlib import Path

from ..backend import ModelSettings
from ..common import resolve_device, resolve_precision
from .build import (
    ARCHITECTURES,
    MODELS,
    build_tracker,
    check_checkpoint,
    check_image_size,
    input_size,
)


class Sam3Backend:
    """SAM 3's `Sam3TrackerPredictor` (`self.predictor`) on one device.

    predictor: one already built with these settings, to reuse (tests); otherwise it is built here, with
    untrained weights initialised from `seed` when the checkpoint is "none".
    """

    family = "sam3"
    title = "SAM 3"
    models = MODELS

    @staticmethod
    def check(settings: ModelSettings) -> Path | None:
        from .internals import (
            check_sam3_version,  # a missing or other sam3 is reported before any work
        )

        check_sam3_version()
        check_image_size(settings.image_size)
        return check_checkpoint(settings.checkpoint)

    @staticmethod
    def input_size(settings: ModelSettings) -> int:
        return input_size(settings.image_size)

    def __init__(self, settings: ModelSettings, predictor=None, seed: int = 0):
        self.settings = settings
        self.checkpoint = self.check(settings)
        self.seed = seed
        device = resolve_device(settings.device) if predictor is None else predictor.device
        self.precision = resolve_precision(settings.precision, device)
        if predictor is None:
            predictor = build_tracker(settings.checkpoint, settings.image_size, device, seed,
                                      ARCHITECTURES[settings.model])
        self.predictor = predictor
        self.image_size = predictor.image_size
        self.device = predictor.device

    def identity(self) -> dict:
        import PIL
        import torch

        from ...utils.hashing import content_hash
        from .internals import SAM3_VERSION

        return {
            "model": self.settings.model, "image_size": self.image_size, "device": self.device.type,
            "precision": self.precision,
            "weights": content_hash(self.checkpoint) if self.checkpoint else f"untrained, seed {self.seed}",
            "torch": torch.__version__, "sam3": SAM3_VERSION, "pillow": PIL.__version__,
        }

    def prepare(self, rgb):
        """(3, S, S) float32: resized and normalised as SAM 3's frame loader does (mean and std 0.5)."""
        from .tracker import to_model_input

        return to_model_input(rgb, self.image_size)

    def forward(self, inputs: list):
        """The tracker's `forward_image` output for a batch of `prepare` outputs."""
        import torch

        from .internals import contained

        with contained(), torch.inference_mode():
            return self.predictor.forward_image(torch.stack(inputs).to(self.device))

    def split_features(self, features: dict) -> list[tuple[list, list[str]]]:
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
        from .tracker import Sam3TargetLabeler

        return Sam3TargetLabeler(self, prompts, memory=memory, threshold=threshold, num_targets=num_targets,
                                 features=features)

    def preview(self, rgb):
        from .tracker import ReferencePreview

        return ReferencePreview(self, rgb)
