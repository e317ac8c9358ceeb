"""A run's settings as one value: checked once, recorded in the manifest, hashed into the fingerprint, carried
to Ray workers.

`RunSettings` holds what `label_batch` takes besides the inputs, the output and the flow controls
(force, progress, stop, guide); `resolved` fills in what the machine decides (the model's input size,
the device, the precision, the checkpoint's absolute path), and the manifest's settings, the fingerprint and the Ray
workers' model are all read from that resolved value.

Usage:
    settings = RunSettings(ModelSettings("tiny", checkpoint="none"), memory="refs", threshold=0.5)
    run = settings.resolved(image_size=1024, device="cpu", checkpoint=None, precision="fp32")
    run.fingerprint(prompts)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import defaults
from ..errors import UsageError
from ..exports import parse_formats
from ..models.backend import MEMORY_MODES, ModelSettings
from ..models.common import PRECISIONS, UNTRAINED
from ..outputs.folder import fingerprint
from ..utils.hashing import content_hash

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class RunSettings:
    """Everything a batch's outputs and placement depend on besides the prompts and the targets.

    Checked when made (UsageError naming the setting); see `label_batch` for each field.
    """

    model: ModelSettings = field(default_factory=ModelSettings)
    memory: str = defaults.MEMORY
    threshold: float = defaults.THRESHOLD
    batch_size: int = defaults.BATCH_SIZE
    formats: tuple[str, ...] = tuple(defaults.FORMATS)
    yolo_val: float = defaults.YOLO_VAL
    reviewed_only: bool = defaults.REVIEWED_ONLY
    cache: str | os.PathLike | bool | None = defaults.CACHE
    cache_size_gb: float = defaults.CACHE_SIZE_GB
    mesh: bool = defaults.MESH
    mesh_limit: int | None = defaults.MESH_LIMIT
    sam3d_config: str | os.PathLike | None = defaults.SAM3D_CONFIG
    executor: str = defaults.EXECUTOR
    workers: int | None = defaults.WORKERS
    ray_address: str | None = defaults.RAY_ADDRESS

    def __post_init__(self):
        try:
            object.__setattr__(self, "formats", tuple(parse_formats(self.formats)))
        except ValueError as e:
            raise UsageError(str(e)) from None
        if self.model.precision not in PRECISIONS:
            raise UsageError(f"precision {self.model.precision!r}: choose auto, bf16 or fp32")
        if self.memory not in MEMORY_MODES:
            raise UsageError(f"memory mode {self.memory!r}: choose refs or chain")
        if not 0 <= self.yolo_val < 1:
            raise UsageError(f"YOLO validation fraction {self.yolo_val}: must be at least 0 and below 1")
        if self.batch_size < 1:
            raise UsageError(f"batch size {self.batch_size}: must be at least 1")
        if self.executor not in EXECUTORS:
            raise UsageError(f"executor {self.executor!r}: choose local or ray")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"workers {self.workers}: must be at least 1")
        if self.executor == "ray" and self.memory == "chain":
            raise UsageError("--memory chain labels the targets in sequence, one chain, so it can't be split over "
                             "Ray workers: use --executor local, or --memory refs")
        if self.executor == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                raise UsageError('--executor ray needs Ray, an optional extra: pip install -e ".[ray]"') from None
        if not self.cache_size_gb > 0:
            raise UsageError(f"feature cache size {self.cache_size_gb} GB: must be above 0")

    def resolved(self, image_size: int, device: str, checkpoint: Path | None, precision: str) -> RunSettings:
        """These settings with the model's input size, the device type ("cpu", "cuda", …), the precision that
        runs ("bf16" or "fp32") and the checkpoint's absolute path ("none": untrained weights) filled in."""
        name = str(Path(checkpoint).absolute()) if checkpoint else UNTRAINED
        return replace(self, model=replace(self.model, checkpoint=name, image_size=image_size, device=device,
                                           precision=precision))

    @property
    def checkpoint_path(self) -> Path | None:
        """The resolved checkpoint file, None for untrained weights."""
        name = self.model.checkpoint
        return None if name is None or str(name).lower() == UNTRAINED else Path(name)

    def manifest_settings(self, targets: str | os.PathLike, folder: Path, taught: list[str]) -> dict:
        """What manifest.json records of a (resolved) run: the review and reruns read it back."""
        m = self.model
        return {
            "model": m.model, "image_size": m.image_size, "device": m.device, "precision": m.precision,
            "memory": self.memory,
            "threshold": self.threshold, "checkpoint": str(m.checkpoint),
            "targets": os.path.relpath(Path(targets).absolute(), folder.absolute()),
            "formats": list(self.formats), "taught": taught,
        }

    def fingerprint(self, prompts) -> str:
        """Everything a target's outputs depend on, besides the target file itself (a resolved run).

        Files count by content, not by path or time: the same batch has the same fingerprint on
        another machine or under another mount point.
        """
        from ..prompts.prompt_set import prompts_to_dict

        guides = prompts_to_dict(prompts, base_dir=Path(os.sep))
        for ref, data in zip((r for r in prompts.references if r.objects), guides["references"]):
            data["image"] = content_hash(ref.image)
        checkpoint = self.checkpoint_path
        # The precision counts only when it is bf16: fp32 runs keep the fingerprint they had before
        # --precision, so an upgrade relabels nothing that fp32 labeled. (CUDA ran bf16 before it too, so
        # CUDA folders labeled then are relabeled once.)
        precision = {"precision": "bf16"} if self.model.precision == "bf16" else {}
        return fingerprint(
            prompts=guides,
            model=self.model.model,
            checkpoint=content_hash(checkpoint) if checkpoint else "untrained",
            image_size=self.model.image_size,
            device=self.model.device,
            memory=self.memory,
            threshold=self.threshold,
            **precision,
        )
