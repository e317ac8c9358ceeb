"""The batch as one library call: checks before work, the model, labeling, exports, review sheet, meshes.

`label_batch` is exactly `python main.py --headless`: the same outputs, manifest, resume, exports,
`report.png` and meshes. It raises `UsageError` for bad input before anything is built or written,
holds the output folder's lock while it writes, and stops after the current target when `stop`
(a `threading.Event`) is set. The SmartSelector flow runs the same function with a `guide` step.

Usage:
    summary = label_batch("output/prompts.json", targets="targets/", output="output/", checkpoint="none")
    print(summary)   # 6 targets: 6 labeled, 0 already labeled, 0 failed; ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from .. import defaults
from ..errors import UsageError
from ..models.backend import (
    ModelSettings,
    backend_class,
    build_backend,
    check_model,
    input_size,
)
from ..models.common import resolve_device, resolve_precision
from ..outputs.folder import OutputFolder
from ..prompts.prompt_set import PromptSet, as_prompt_set
from ..utils.images import list_images
from .recorder import BatchRecorder
from .settings import RunSettings

log = logging.getLogger("labeler")


def _target_list(targets: str | os.PathLike) -> list[Path]:
    folder = Path(targets)
    if not folder.is_dir():
        raise UsageError(f"target folder {folder} does not exist")
    found = list_images(folder)
    if not found:
        raise UsageError(f"no images in the target folder {folder}")
    return found


def label_batch(
    prompts: PromptSet | str | os.PathLike | None,
    targets: str | os.PathLike,
    output: str | os.PathLike,
    model: str = defaults.MODEL,
    checkpoint: str | os.PathLike | None = defaults.CHECKPOINT,
    image_size: int | None = defaults.IMAGE_SIZE,
    device: str = defaults.DEVICE,
    precision: str = defaults.PRECISION,
    memory: str = defaults.MEMORY,
    threshold: float = defaults.THRESHOLD,
    batch_size: int = defaults.BATCH_SIZE,
    formats: Iterable[str] | str = defaults.FORMATS,
    yolo_val: float = defaults.YOLO_VAL,
    reviewed_only: bool = defaults.REVIEWED_ONLY,
    classes: dict[int, str] | None = None,
    force: bool = False,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    cache: str | os.PathLike | bool | None = defaults.CACHE,
    cache_size_gb: float = defaults.CACHE_SIZE_GB,
    mesh: bool = defaults.MESH,
    mesh_limit: int | None = defaults.MESH_LIMIT,
    sam3d_config: str | os.PathLike | None = defaults.SAM3D_CONFIG,
    guide: Callable[[object], PromptSet] | None = None,
    predictor=None,
    backend=None,
    executor: str = defaults.EXECUTOR,
    workers: int | None = defaults.WORKERS,
    ray_address: str | None = defaults.RAY_ADDRESS,
):
    """Label every image in the folder `targets` into the folder `output`; returns the `BatchSummary`.

    prompts: a `PromptSet` or the path of a prompts.json (None only with `guide`).
    model, checkpoint, image_size, device, precision: as `Labeler.from_pretrained` (checkpoint "none": untrained
    weights; None: checkpoints/sam2.1_hiera_<model>.pt; nothing is ever downloaded).
    memory: "refs" (targets independent) or "chain" (targets form a pseudo-video after the references).
    threshold: object-score logit above which an object is present. batch_size: targets per forward (refs).
    formats: dataset exports written after a finished batch ("coco", "yolo"); yolo_val: the fraction of
    images the YOLO export lists for validation (fixed seed); reviewed_only: exports hold only the
    targets a person reviewed (`python main.py review`). classes: class names
    that override the prompts' ({1: "scratch"}). force: relabel targets already labeled.
    on_progress: called with (done, total) after each target (a web page's progress line).
    stop: set it to stop after the current target (`summary.interrupted`); the same call resumes.
    cache: the feature cache's folder (None: the user's cache folder, used on CPU and MPS, not on
    CUDA; False: no cache); cache_size_gb: its size cap (least recently used entries go first).
    mesh, mesh_limit, sam3d_config: SAM 3D Objects meshes of the present objects after the batch.
    guide: called with the built model backend before labeling; returns the prompts (the SmartSelector).
    backend: a model backend already built with these model settings, to reuse (the review window's);
    predictor: the same for a SAM 2 predictor.
    executor: "local" (this process) or "ray" (refs mode: `workers` model replicas on the Ray cluster at
    `ray_address`, "auto" or "ray://HOST:PORT"; None starts a local Ray instance); see `ray_executor`.
    Raises UsageError for bad input, before anything is built or written.
    """
    settings = RunSettings(ModelSettings(model, checkpoint, image_size, device, precision), memory, threshold,
                           batch_size, formats, yolo_val, reviewed_only, cache, cache_size_gb, mesh, mesh_limit,
                           sam3d_config, executor, workers, ray_address)
    if prompts is not None or guide is None:
        prompts = as_prompt_set(prompts)
    target_list = _target_list(targets)
    local = executor == "local"
    # Ray workers label on the cluster's devices; this process needs one only to guide.
    torch_device = resolve_device(device) if local or guide is not None else None
    checkpoint_path = check_model(settings.model)
    reconstructor = None
    if mesh:  # a missing SAM 3D install stops here, before any work
        from ..outputs.meshes import load_reconstructor

        reconstructor = load_reconstructor(sam3d_config)
    folder = OutputFolder(output)
    folder.check_writable()

    if backend is None and predictor is not None:
        from ..models.sam2.backend import Sam2Backend

        backend = Sam2Backend(settings.model, predictor=predictor)
    if backend is None and torch_device is not None:
        backend = build_backend(replace(settings.model, device=torch_device.type))
        log.info("%s %s on %s, %s", backend_class(model).title, model, torch_device, backend.precision)
    cluster = contextlib.nullcontext()
    if not local:
        from .ray_executor import ray_cluster

        cluster = ray_cluster(ray_address, device, workers)
    with cluster as ray_run, folder.lock():
        device_type = ray_run.device if ray_run else backend.device.type
        size = backend.image_size if backend is not None else input_size(settings.model)
        if guide is not None:
            prompts = guide(backend)
            if not prompts.references:
                raise UsageError("no guides were drawn, so there is nothing to label")
        if classes:
            prompts = PromptSet(prompts.references, {**prompts.classes, **classes})
        manifest = folder.manifest()
        if manifest.identified_by_time:
            log.info("%s identifies targets by file time, as labelers before content hashes did: every target "
                     "is labeled once more, and from then on by content", folder.manifest_json)
        # What runs: the backend's precision; Ray workers take `auto` as resolved here, for the cluster's device
        # type on this machine's CPU (pass bf16 or fp32 for CPU workers on other CPUs).
        run_precision = backend.precision if backend is not None else resolve_precision(precision, device_type)
        run = settings.resolved(size, device_type, checkpoint_path, run_precision)
        recorded = run.manifest_settings(targets, folder.root, _taught_kept(manifest, prompts, folder))
        # Record what this batch is conditioned on, so it can be rerun headless.
        prompts.save(folder.prompts_json)
        log.info("%d reference(s), %d target(s), memory mode %s", len(prompts.references), len(target_list), memory)
        recorder = BatchRecorder(folder, target_list, prompts.classes, run.fingerprint(prompts), force, memory,
                                 progress, stop, recorded, manifest, on_progress)
        if ray_run:
            from .ray_executor import LabelerSpec

            spec = LabelerSpec(prompts, run, backend_class(model))
            summary = ray_run.run_batch(spec, recorder, batch_size, prompts.object_ids)
        else:
            summary = _label(backend, run, prompts, recorder)
        del backend, predictor  # SAM 3D needs the GPU memory
        log.info("%s", summary)
        log.info("results in %s", os.path.abspath(folder.root))
        if summary.interrupted:
            return summary
        _write_exports(folder, prompts, target_list, list(run.formats), yolo_val, reviewed_only)
        if reconstructor is not None:
            from ..outputs import meshes
            from .local import free_memory

            free_memory()
            summary.meshes = meshes.write_meshes(folder.root, target_list, reconstructor, limit=mesh_limit,
                                                 force=force, progress=progress)
            log.info("%s", summary.meshes)
    return summary


def _taught_kept(manifest, prompts: PromptSet, folder: OutputFolder) -> list[str]:
    """The references a review taught that these prompts still hold; says how many they drop."""
    taught = manifest.settings.get("taught", [])
    images = {str(r.image) for r in prompts.references}
    dropped = [t for t in taught if t not in images]
    if dropped:
        log.warning("these prompts drop %d reference(s) taught in a review (%s); to keep them, pass "
                    "--prompts %s", len(dropped), ", ".join(Path(t).name for t in dropped), folder.prompts_json)
    return [t for t in taught if t in images]


def _label(backend, run: RunSettings, prompts: PromptSet, recorder: BatchRecorder):
    """The local executor with `backend` (and its feature cache, where the settings use one)."""
    from .feature_cache import feature_cache_for
    from .local import run_batch

    features = feature_cache_for(run.cache, run.cache_size_gb, backend)
    labeler = backend.condition(prompts, run.memory, run.threshold, num_targets=len(recorder.targets),
                                features=features)
    summary = run_batch(labeler, recorder, run.batch_size, prepare=backend.prepare)
    if features is not None:
        log.info("feature cache %s: %d images read, %d encoded", features.folder, features.hits, features.misses)
    return summary


def _write_exports(folder: OutputFolder, prompts: PromptSet, targets: list[Path], formats: list[str],
                   yolo_val: float, reviewed_only: bool = False) -> None:
    """Dataset exports and report.png, rebuilt from the output folder for every labeled target."""
    from ..exports import write_exports
    from ..outputs.report import write_report

    for path in write_exports(folder.root, targets, prompts.classes, formats, prompts.object_ids, yolo_val,
                              reviewed_only):
        log.info("exported %s", path)
    log.info("review sheet %s", write_report(folder.root, targets, prompts.classes, prompts.object_ids))
