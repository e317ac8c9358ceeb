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
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from .. import defaults
from ..errors import UsageError
from ..exports import parse_formats
from ..models.sam2.build import (
    UNTRAINED,
    check_checkpoint,
    check_image_size,
    input_size,
    resolve_device,
)
from ..outputs.folder import OutputFolder, fingerprint
from ..prompts.prompt_set import PromptSet, as_prompt_set
from ..utils.hashing import content_hash
from ..utils.images import list_images

log = logging.getLogger("labeler")


def _target_list(targets: str | os.PathLike) -> list[Path]:
    folder = Path(targets)
    if not folder.is_dir():
        raise UsageError(f"target folder {folder} does not exist")
    found = list_images(folder)
    if not found:
        raise UsageError(f"no images in the target folder {folder}")
    return found


def run_fingerprint(prompts: PromptSet, model: str, checkpoint: Path | None, image_size: int, device: str,
                    memory: str, threshold: float) -> str:
    """Everything a target's outputs depend on, besides the target file itself.

    Files count by content, not by path or time: the same batch has the same fingerprint on
    another machine or under another mount point.
    """
    from ..prompts.prompt_set import prompts_to_dict

    guides = prompts_to_dict(prompts, base_dir=Path(os.sep))
    for ref, data in zip((r for r in prompts.references if r.objects), guides["references"]):
        data["image"] = content_hash(ref.image)
    return fingerprint(
        prompts=guides,
        model=model,
        checkpoint=content_hash(checkpoint) if checkpoint else "untrained",
        image_size=image_size,
        device=device,
        memory=memory,
        threshold=threshold,
    )


def label_batch(
    prompts: PromptSet | str | os.PathLike | None,
    targets: str | os.PathLike,
    output: str | os.PathLike,
    model: str = defaults.MODEL,
    checkpoint: str | os.PathLike | None = defaults.CHECKPOINT,
    image_size: int | None = defaults.IMAGE_SIZE,
    device: str = defaults.DEVICE,
    memory: str = defaults.MEMORY,
    threshold: float = defaults.THRESHOLD,
    batch_size: int = defaults.BATCH_SIZE,
    formats: Iterable[str] | str = defaults.FORMATS,
    yolo_val: float = defaults.YOLO_VAL,
    reviewed_only: bool = defaults.REVIEWED_ONLY,
    classes: dict[int, str] | None = None,
    force: bool = False,
    progress: bool = True,
    stop: threading.Event | None = None,
    cache: str | os.PathLike | bool | None = defaults.CACHE,
    cache_size_gb: float = defaults.CACHE_SIZE_GB,
    mesh: bool = defaults.MESH,
    mesh_limit: int | None = defaults.MESH_LIMIT,
    sam3d_config: str | os.PathLike | None = defaults.SAM3D_CONFIG,
    guide: Callable[[object], PromptSet] | None = None,
    predictor=None,
    executor: str = defaults.EXECUTOR,
    workers: int | None = defaults.WORKERS,
    ray_address: str | None = defaults.RAY_ADDRESS,
):
    """Label every image in the folder `targets` into the folder `output`; returns the `BatchSummary`.

    prompts: a `PromptSet` or the path of a prompts.json (None only with `guide`).
    model, checkpoint, image_size, device: as `Labeler.from_pretrained` (checkpoint "none": untrained
    weights; None: checkpoints/sam2.1_hiera_<model>.pt; nothing is ever downloaded).
    memory: "refs" (targets independent) or "chain" (targets form a pseudo-video after the references).
    threshold: object-score logit above which an object is present. batch_size: targets per forward (refs).
    formats: dataset exports written after a finished batch ("coco", "yolo"); yolo_val: the fraction of
    images the YOLO export lists for validation (fixed seed); reviewed_only: exports hold only the
    targets a person reviewed (`python main.py review`). classes: class names
    that override the prompts' ({1: "scratch"}). force: relabel targets already labeled.
    stop: set it to stop after the current target (`summary.interrupted`); the same call resumes.
    cache: the feature cache's folder (None: the user's cache folder, used on CPU and MPS, not on
    CUDA; False: no cache); cache_size_gb: its size cap (least recently used entries go first).
    mesh, mesh_limit, sam3d_config: SAM 3D Objects meshes of the present objects after the batch.
    guide: called with the built SAM 2 predictor before labeling; returns the prompts (the SmartSelector).
    predictor: a SAM 2 predictor already built with these model settings, to reuse (the review window's).
    executor: "local" (this process) or "ray" (refs mode: `workers` model replicas on the Ray cluster at
    `ray_address`, "auto" or "ray://HOST:PORT"; None starts a local Ray instance); see `ray_executor`.
    Raises UsageError for bad input, before anything is built or written.
    """
    formats = _checked(parse_formats, formats)
    if memory not in ("refs", "chain"):
        raise UsageError(f"memory mode {memory!r}: choose refs or chain")
    if not 0 <= yolo_val < 1:
        raise UsageError(f"YOLO validation fraction {yolo_val}: must be at least 0 and below 1")
    if batch_size < 1:
        raise UsageError(f"batch size {batch_size}: must be at least 1")
    _check_executor(executor, memory, workers)
    if not cache_size_gb > 0:
        raise UsageError(f"feature cache size {cache_size_gb} GB: must be above 0")
    if prompts is not None or guide is None:
        prompts = as_prompt_set(prompts)
    target_list = _target_list(targets)
    check_image_size(image_size)
    # Ray workers label on the cluster's devices; this process needs one only to guide.
    torch_device = resolve_device(device) if executor == "local" or guide is not None else None
    checkpoint_path = check_checkpoint(model, checkpoint)
    reconstructor = None
    if mesh:  # a missing SAM 3D install stops here, before any work
        from ..outputs.meshes import load_reconstructor

        reconstructor = load_reconstructor(sam3d_config)
    folder = OutputFolder(output)
    folder.check_writable()

    from ..models.sam2.build import build_predictor

    if predictor is None and torch_device is not None:
        log.info("SAM 2.1 %s on %s", model, torch_device)
        predictor = build_predictor(model, checkpoint, image_size, torch_device)
    cluster = contextlib.nullcontext()
    if executor == "ray":
        from .ray_executor import ray_cluster

        cluster = ray_cluster(ray_address, device, workers)
    with cluster as ray_run, folder.lock():
        device_type = ray_run.device if ray_run else torch_device.type
        size = predictor.image_size if predictor is not None else input_size(model, image_size)
        if guide is not None:
            prompts = guide(predictor)
            if not prompts.references:
                raise UsageError("no guides were drawn, so there is nothing to label")
        if classes:
            prompts = PromptSet(prompts.references, {**prompts.classes, **classes})
        manifest = folder.manifest()
        checkpoint_name = str(checkpoint_path.absolute()) if checkpoint_path else UNTRAINED
        if manifest.identified_by_time:
            log.info("%s identifies targets by file time, as labelers before content hashes did: every target "
                     "is labeled once more, and from then on by content", folder.manifest_json)
        settings = {
            "model": model, "image_size": size, "device": device_type, "memory": memory,
            "threshold": threshold,
            "checkpoint": checkpoint_name,
            "targets": os.path.relpath(Path(targets).absolute(), folder.root.absolute()),
            "formats": formats, "taught": _taught_kept(manifest, prompts, folder),
        }
        run = run_fingerprint(prompts, model, checkpoint_path, size, device_type, memory, threshold)
        from .feature_cache import feature_cache_for

        # Each Ray worker builds its own predictor, and its own feature cache for it.
        cache_for = functools.partial(feature_cache_for, cache, cache_size_gb, model, checkpoint_path)
        # Record what this batch is conditioned on, so it can be rerun headless.
        prompts.save(folder.prompts_json)
        log.info("%d reference(s), %d target(s), memory mode %s", len(prompts.references), len(target_list), memory)
        batch = dict(force=force, progress=progress, stop=stop, batch_size=batch_size, settings=settings,
                     manifest=manifest)
        if ray_run:
            from .ray_executor import LabelerSpec

            spec = LabelerSpec(prompts, model, checkpoint_name, size, device_type, memory, threshold, cache_for)
            summary = ray_run.run_batch(spec, target_list, folder, prompts.classes, run, **batch,
                                        object_ids=prompts.object_ids)
        else:
            summary = _label(predictor, cache_for(predictor), prompts, target_list, folder, run, memory, threshold,
                             batch)
        del predictor  # SAM 3D needs the GPU memory
        log.info("%s", summary)
        log.info("results in %s", os.path.abspath(folder.root))
        if summary.interrupted:
            return summary
        _write_exports(folder, prompts, target_list, formats, yolo_val, reviewed_only)
        if reconstructor is not None:
            from ..outputs import meshes
            from .local import free_memory

            free_memory()
            summary.meshes = meshes.write_meshes(folder.root, target_list, reconstructor, limit=mesh_limit,
                                                 force=force, progress=progress)
            log.info("%s", summary.meshes)
    return summary


def _check_executor(executor: str, memory: str, workers: int | None) -> None:
    if executor not in ("local", "ray"):
        raise UsageError(f"executor {executor!r}: choose local or ray")
    if workers is not None and workers < 1:
        raise UsageError(f"workers {workers}: must be at least 1")
    if executor == "ray" and memory == "chain":
        raise UsageError("--memory chain labels the targets in sequence, one chain, so it can't be split over "
                         "Ray workers: use --executor local, or --memory refs")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError('--executor ray needs Ray, an optional extra: pip install -e ".[ray]"') from None


def _taught_kept(manifest, prompts: PromptSet, folder: OutputFolder) -> list[str]:
    """The references a review taught that these prompts still hold; says how many they drop."""
    taught = manifest.settings.get("taught", [])
    images = {str(r.image) for r in prompts.references}
    dropped = [t for t in taught if t not in images]
    if dropped:
        log.warning("these prompts drop %d reference(s) taught in a review (%s); to keep them, pass "
                    "--prompts %s", len(dropped), ", ".join(Path(t).name for t in dropped), folder.prompts_json)
    return [t for t in taught if t in images]


def _checked(parse, value):
    try:
        return parse(value)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _label(predictor, features, prompts, targets, folder, run, memory, threshold, batch: dict):
    """The local executor with `predictor` (and its feature cache, or None)."""
    from ..models.sam2.tracker import Labeler
    from .local import run_batch

    labeler = Labeler(predictor, prompts, memory=memory, threshold=threshold, num_targets=len(targets),
                      features=features)
    summary = run_batch(labeler, targets, folder, prompts.classes, run, **batch)
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
