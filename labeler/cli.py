"""Command line: `python main.py [--headless] ...` and `python main.py download --model tiny`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import runpy
import signal
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import UsageError
from .exports import formats_arg, parse_formats
from .model import MODELS, ModelError

log = logging.getLogger("labeler")


@dataclass
class Settings:
    """Defaults of config.py, overridden by command-line options."""

    reference_dir: str = "refs"
    target_dir: str = "targets"
    output_dir: str = "output"
    prompts: str | None = None
    model: str = "tiny"
    checkpoint: str | None = None
    image_size: int | None = None
    device: str = "auto"
    memory: str = "refs"
    threshold: float = 0.0
    batch_size: int = 1
    class_names: dict[int, str] | None = None
    formats: tuple[str, ...] | list[str] = ()  # dataset exports written after the batch: coco, yolo
    mesh: bool = False
    mesh_limit: int | None = None
    sam3d_config: str | None = None

    @classmethod
    def from_config(cls, path: Path | None) -> "Settings":
        """Read the upper-case names of config.py (REFERENCE_DIR, TARGET_DIR, ...) when it exists."""
        values = runpy.run_path(str(path)) if path is not None and path.is_file() else {}
        known = {f.name for f in fields(cls)}
        return cls(**{k.lower(): v for k, v in values.items() if k.isupper() and k.lower() in known})

    @property
    def prompts_path(self) -> Path:
        return Path(self.prompts) if self.prompts else Path(self.output_dir) / "prompts.json"


def _parser(settings: Settings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py",
        description="Few-shot SAM 2 labeler: guide a few reference images, label every target image.",
        epilog="Also: `python main.py download --model tiny` fetches a SAM 2.1 checkpoint.",
    )
    p.add_argument("--headless", action="store_true", help="no window: label the targets from the saved prompts")
    p.add_argument("--edit", action="store_true", help="reopen the saved prompts' references for changes, then label")
    p.add_argument("--prompts", default=settings.prompts, help="prompts file (default: OUTPUT/prompts.json)")
    p.add_argument("--refs", dest="reference_dir", default=settings.reference_dir, help="reference image folder")
    p.add_argument("--targets", dest="target_dir", default=settings.target_dir, help="target image folder")
    p.add_argument("--output", dest="output_dir", default=settings.output_dir, help="output folder")
    p.add_argument("--model", choices=list(MODELS), default=settings.model)
    p.add_argument("--checkpoint", default=settings.checkpoint, help="checkpoint file, or 'none' for untrained weights")
    p.add_argument("--image-size", type=int, default=settings.image_size, help="model input size (default 1024)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=settings.device)
    p.add_argument("--memory", choices=["refs", "chain"], default=settings.memory)
    p.add_argument("--threshold", type=float, default=settings.threshold, help="object-score logit threshold")
    p.add_argument("--batch-size", type=int, default=settings.batch_size,
                   help="targets per forward in refs mode (useful on CUDA)")
    p.add_argument("--formats", type=formats_arg, default=settings.formats, metavar="coco,yolo",
                   help="dataset exports written after the batch (comma list; report.png is always written)")
    p.add_argument("--force", action="store_true", help="relabel every target, even those already labeled")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--mesh", action=argparse.BooleanOptionalAction, default=settings.mesh,
                   help="after the batch, reconstruct present objects in 3D with SAM 3D Objects (meshes/)")
    p.add_argument("--mesh-limit", type=_positive_int, default=settings.mesh_limit, metavar="N",
                   help="with --mesh: only the N best-scoring objects per ID")
    p.add_argument("--sam3d-config", default=settings.sam3d_config, metavar="PATH",
                   help="SAM 3D Objects' checkpoints/hf/pipeline.yaml (for --mesh)")
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _download(argv: list[str]) -> int:
    from .model import download_checkpoint

    p = argparse.ArgumentParser(prog="main.py download", description="Fetch Meta's SAM 2.1 checkpoint.")
    p.add_argument("--model", choices=list(MODELS), default="tiny")
    args = p.parse_args(argv)
    try:
        path = download_checkpoint(args.model)
    except ModelError as e:
        log.error("error: %s", e)
        return 1
    log.info("saved %s", path)
    return 0


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ModelError(f"output folder {folder} can't be written: {e.strerror or e}") from e


def main(argv: list[str] | None = None, config_path: Path | None = None) -> int:
    """Run the labeler; returns the process exit code (0 ok, 1 some targets failed, 2 bad input)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["download"]:
        return _download(argv[1:])
    settings = Settings.from_config(config_path if config_path is not None else Path("config.py"))
    args = _parser(settings).parse_args(argv)
    for name, value in vars(args).items():
        if hasattr(settings, name):
            setattr(settings, name, value)
    try:
        return _run(settings, interactive=not args.headless, edit=args.edit, progress=not args.quiet,
                    force=args.force)
    except (UsageError, ValueError, FileNotFoundError) as e:
        log.error("error: %s", e)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; run the same command again to resume")
        return 130


def _run(s: Settings, interactive: bool, edit: bool, progress: bool, force: bool) -> int:
    """Everything that can be checked is checked before the model is built or a window opens."""
    from .images import list_images
    from .model import check_checkpoint
    from .prompts import load_prompts

    s.formats = parse_formats(s.formats)  # config.py's FORMATS is checked like --formats
    prompts_path = s.prompts_path
    prompts = None
    if not interactive or edit:
        if not prompts_path.is_file():
            raise FileNotFoundError(
                f"no prompts file at {prompts_path}: guide the references with `python main.py`, or pass --prompts"
            )
        prompts = load_prompts(prompts_path)
    target_dir, output_dir = Path(s.target_dir), Path(s.output_dir)
    if not target_dir.is_dir():
        raise FileNotFoundError(f"target folder {target_dir} does not exist (--targets)")
    targets = list_images(target_dir)
    if not targets:
        raise FileNotFoundError(f"no images in the target folder {target_dir} (--targets)")
    if interactive and not edit:
        if not Path(s.reference_dir).is_dir():
            raise FileNotFoundError(f"reference folder {s.reference_dir} does not exist (--refs)")
        references = list_images(s.reference_dir)
        if not references:
            raise FileNotFoundError(f"no images in the reference folder {s.reference_dir} (--refs)")
    check_checkpoint(s.model, s.checkpoint)
    reconstructor = _mesh_reconstructor(s)  # a missing SAM 3D install stops here, before any work
    _check_writable(output_dir)
    if interactive:
        from .selector import run_selector, use_window_backend

        use_window_backend()  # no display: say so before the model is built
    predictor = _build(s)
    if interactive:
        refs = [r.image for r in prompts.references] if edit else references
        prompts = run_selector(refs, predictor, dict(s.class_names or {}), prompts_path, existing=prompts)
        if not prompts.references:
            raise ValueError("no guides were drawn, so there is nothing to label")
    code = _label(s, predictor, prompts, targets, progress, force)
    del predictor  # SAM 3D needs the GPU memory
    return _meshes(s, reconstructor, targets, code, progress, force)


def _mesh_reconstructor(s: Settings):
    """With --mesh: SAM 3D Objects, checked (import, config, GPU) but not yet built; else None."""
    if not s.mesh:
        return None
    from . import meshes

    return meshes.load_reconstructor(s.sam3d_config)


def _meshes(s: Settings, reconstructor, targets: list[Path], code: int, progress: bool, force: bool) -> int:
    """After a finished batch (not an interrupted one): meshes/; exit 1 when an object failed."""
    if reconstructor is None or code not in (0, 1):
        return code
    from . import meshes
    from .batch import free_memory

    free_memory()
    summary = meshes.write_meshes(Path(s.output_dir), targets, reconstructor, limit=s.mesh_limit,
                                  force=force, progress=progress)
    log.info("%s", summary)
    return 1 if summary.failed else code


def _build(s: Settings):
    from .model import build_predictor, resolve_device

    device = resolve_device(s.device)
    log.info("SAM 2.1 %s on %s", s.model, device)
    # SAM 2's optional hole-filling needs its CUDA extension, which the rf-sam-2 wheel doesn't
    # build; SAM 2 then skips that step (it only fills holes of <= 8 pixels) with a long warning.
    warnings.filterwarnings("ignore", message=r"cannot import name '_C'")
    return build_predictor(s.model, s.checkpoint, s.image_size, device)


def _label(s: Settings, predictor, prompts, targets: list[Path], progress: bool, force: bool) -> int:
    import torch

    from .batch import run_batch
    from .engine import Labeler
    from .prompts import save_prompts

    output_dir = Path(s.output_dir)
    # Record what this batch is conditioned on, so it can be rerun headless.
    save_prompts(prompts, output_dir / "prompts.json")
    log.info("%d reference(s), %d target(s), memory mode %s", len(prompts.references), len(targets), s.memory)
    torch.set_grad_enabled(False)
    labeler = Labeler(predictor, prompts, memory=s.memory, threshold=s.threshold, num_targets=len(targets))
    with _stop_on_signals() as stop:
        summary = run_batch(labeler, targets, output_dir, prompts.classes, _fingerprint(s, predictor, prompts),
                            force=force, progress=progress, stop=stop, batch_size=max(1, s.batch_size))
    log.info("%s", summary)
    log.info("results in %s", os.path.abspath(output_dir))
    if summary.interrupted:
        log.error("interrupted: results.csv and manifest.json are up to date; "
                  "run the same command again to label the remaining targets")
        return 128 + stop.signum
    _write_exports(s, prompts, targets)  # only after a finished batch: an interrupted one writes them on resume
    return 1 if summary.failed else 0


def _write_exports(s: Settings, prompts, targets: list[Path]) -> None:
    """Dataset exports (--formats) and report.png, rebuilt from the output folder for every labeled target."""
    from .batch import output_stems
    from .exports import write_exports
    from .report import write_report

    output_dir, stems = Path(s.output_dir), output_stems(targets)
    for path in write_exports(output_dir, targets, stems, prompts.classes, s.formats, prompts.object_ids):
        log.info("exported %s", path)
    log.info("review sheet %s", write_report(output_dir, targets, stems, prompts.classes, prompts.object_ids))


def _fingerprint(s: Settings, predictor, prompts) -> str:
    """Everything a target's outputs depend on, besides the target file itself."""
    from .manifest import file_identity, fingerprint
    from .model import check_checkpoint
    from .prompts import prompts_to_dict

    checkpoint = check_checkpoint(s.model, s.checkpoint)
    return fingerprint(
        prompts=prompts_to_dict(prompts, base_dir=Path(os.sep)),  # absolute image paths
        references=[file_identity(r.image) for r in prompts.references],
        model=s.model,
        checkpoint=f"{checkpoint.resolve()}:{file_identity(checkpoint)}" if checkpoint else "untrained",
        image_size=predictor.image_size,
        device=predictor.device.type,
        memory=s.memory,
        threshold=s.threshold,
    )


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT or SIGTERM asks the batch to stop after the current target; a second one stops at once."""
    stop = threading.Event()
    stop.signum = 0

    def request_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.signum = signum
        stop.set()
        log.warning("%s: stopping after the current target (press Ctrl-C again to stop at once)",
                    signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
