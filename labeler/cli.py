"""`python main.py [--headless] ...`, `python main.py download`: config.py and options into one `label_batch` call,
signal handlers, exit codes (0 ok, 1 a target failed, 2 bad input, 130/143 stopped); no torch before arguments."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import runpy
import sys
import threading
from pathlib import Path

from . import defaults
from .errors import UsageError
from .exports import formats_arg
from .gui.hosts import WEB_DEFAULTS, WEB_OPTIONS
from .models.backend import download, model_names
from .models.common import DEVICES, PRECISIONS
from .models.sam2.build import CHECKPOINT_DIR, MODELS
from .utils.signals import stop_on_signals

log = logging.getLogger("labeler")


def _classes(text: str) -> dict[int, str]:
    try:
        classes = {int(k): name.strip() for k, name in (item.split("=", 1) for item in text.split(",") if item.strip())}
    except ValueError:
        classes = {}
    if not classes or not all(1 <= k <= 255 for k in classes):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ID=name pairs with IDs 1-255, e.g. 1=scratch,2=dent")
    return classes


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:  # argparse's error, before torch is imported
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number of at least 1")
    return int(text)


# config.py name -> (option, argparse keywords); config.py's value is the option's default.
OPTIONS = {
    "PROMPTS": ("--prompts", dict(metavar="FILE", help="saved prompts (default: OUTPUT/prompts.json)")),
    "REFERENCE_DIR": ("--refs", dict(metavar="DIR", help="reference images to guide in the SmartSelector")),
    "TARGET_DIR": ("--targets", dict(metavar="DIR", help="target images to label (the folder's own images)")),
    "OUTPUT_DIR": ("--output", dict(metavar="DIR", help="where results go")),
    "MODEL": ("--model", dict(choices=model_names(), help="SAM 2.1 model size, or sam3 (docs/sam3.md)")),
    "CHECKPOINT": ("--checkpoint", dict(metavar="PATH", help=f"checkpoint (default: {CHECKPOINT_DIR}/sam2.1_hiera_"
                                        "MODEL.pt, sam3.pt), or 'none': untrained weights, for tests")),
    "IMAGE_SIZE": ("--image-size", dict(type=int, metavar="N", help="model input size (default: the model's own)")),
    "DEVICE": ("--device", dict(choices=list(DEVICES), help="auto: cuda, else mps, else cpu")),
    "PRECISION": ("--precision", dict(choices=list(PRECISIONS), help="auto: bf16 autocast on CUDA and on "
                                      "CPUs with native bf16 (AMX-BF16, AVX512-BF16), else fp32")),
    "MEMORY": ("--memory", dict(choices=["refs", "chain"], help="refs: each target attends to the references only "
                                "(independent targets); chain: targets are a video after them (frame sequences)")),
    "THRESHOLD": ("--threshold", dict(type=float, help="an object is present above this object-score logit")),
    "BATCH_SIZE": ("--batch-size", dict(type=_positive_int, metavar="B", help="targets per forward, refs mode (GPU)")),
    "FORMATS": ("--formats", dict(type=formats_arg, metavar="coco,yolo", help="dataset exports after the batch")),
    "REVIEWED_ONLY": ("--reviewed-only", dict(action=argparse.BooleanOptionalAction, help="exports: reviewed only")),
    "YOLO_VAL": ("--yolo-val", dict(type=float, metavar="F", help="fraction of the YOLO images listed for validation")),
    "CLASS_NAMES": ("--classes", dict(type=_classes, metavar="1=scratch,2=dent", help="class names over the prompts' "
                                      "(default: theirs; config.py's CLASS_NAMES seed new guides)")),
    "CACHE": ("--cache", dict(metavar="DIR", help="feature cache folder: reruns skip the image encoder (default: "
                              "~/.cache/sam2-labeler/features, on for CPU and MPS, off for CUDA; --no-cache: off)")),
    "CACHE_SIZE_GB": ("--cache-size", dict(type=float, metavar="GB", help="feature cache size cap, oldest out first")),
    "MESH": ("--mesh", dict(action=argparse.BooleanOptionalAction, help="SAM 3D Objects meshes after the batch")),
    "MESH_LIMIT": ("--mesh-limit", dict(type=_positive_int, metavar="N", help="--mesh: the N best objects per ID")),
    "SAM3D_CONFIG": ("--sam3d-config", dict(metavar="PATH", help="SAM 3D Objects' checkpoints/hf/pipeline.yaml")),
    "EXECUTOR": ("--executor", dict(choices=["local", "ray"], help="ray: model replicas on a Ray cluster (refs)")),
    "WORKERS": ("--workers", dict(type=_positive_int, metavar="N", help="Ray replicas (default: 1 per GPU, else 1)")),
    "RAY_ADDRESS": ("--ray-address", dict(metavar="ADDR", help="join Ray: auto|ray://HOST:PORT (default: a new one)")),
    **WEB_OPTIONS,
}
# Defaults of the options the library doesn't have; CLASS_NAMES from config.py seeds new guides only.
CLI_DEFAULTS = dict(PROMPTS=None, REFERENCE_DIR="refs", TARGET_DIR="targets", OUTPUT_DIR="output", **WEB_DEFAULTS)
COMMANDS = ("commands:\n  download    fetch a SAM 2.1 checkpoint into checkpoints/ (download --help)\n"
            "  review      review and correct a labeled output folder, worst first; --audit N: N at random\n"
            "  quality     how good the labels are, from the audit: quality.json (quality --help)\n"
            "  cache       the feature cache's size and entries; cache --clear empties it")
SUBCOMMANDS = {"review": (".gui.review_window", "review_command"), "quality": (".review.audit", "quality_command")}


def _parser(config: dict) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main.py", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=COMMANDS,
                                description="Few-shot SAM 2 labeler: guide a few reference images, then label every "
                                "target image.\nDefaults come from config.py.")
    p.add_argument("--headless", action="store_true", help="no window: label the targets from the saved prompts")
    p.add_argument("--edit", action="store_true", help="reopen the saved prompts' references, then label")
    for name, (flag, kwargs) in OPTIONS.items():
        default = config.get(name, CLI_DEFAULTS.get(name, getattr(defaults, name, None)))
        help_text = kwargs["help"] + ("" if "(default" in kwargs["help"] else f" (default: {default})")
        p.add_argument(flag, dest=name, default=default, **{**kwargs, "help": help_text})
    p.add_argument("--no-cache", action="store_true", help="no feature cache (over --cache and config.py's CACHE)")
    p.add_argument("--force", action="store_true", help="relabel every target, even those already labeled")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _download(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="main.py download", description="Fetch Meta's SAM 2.1 checkpoint into "
                                f"{CHECKPOINT_DIR}/sam2.1_hiera_MODEL.pt (relative to the folder you run from).")
    p.add_argument("--model", choices=[*MODELS, "sam3"], default=defaults.MODEL, help="(default: %(default)s)")
    try:
        log.info("saved %s", download(p.parse_args(argv).model))
    except UsageError as e:
        log.error("error: %s", e)
        return 1
    return 0


def main(argv: list[str] | None = None, config_path: Path | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["download"]:
        return _download(argv[1:])
    path = config_path if config_path is not None else Path("config.py")
    config = {k: v for k, v in (runpy.run_path(str(path)) if path.is_file() else {}).items() if k in OPTIONS}
    if argv[:1] in (["review"], ["quality"]):  # imported only when called: the window, the audit
        module, command = SUBCOMMANDS[argv[0]]
        return getattr(importlib.import_module(module, __package__), command)(argv[1:], config)
    if argv[:1] == ["cache"]:
        from .batch.feature_cache import cache_command
        return cache_command(argv[1:], config.get("CACHE") or None)
    config_classes = config.pop("CLASS_NAMES", None) or {}
    args = vars(_parser(config).parse_args(argv))
    try:
        with stop_on_signals() as stop:
            summary = _run(args, stop, config_classes)
    except UsageError as e:
        log.error("error: %s", e)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; run the same command again to resume")
        return 130
    if not summary.interrupted:
        return summary.exit_code
    log.error("interrupted: results.csv and manifest.json are up to date; run the same command again to resume")
    return 128 + stop.signum


def _run(a: dict, stop: threading.Event, config_classes: dict[int, str]):
    from .batch.pipeline import label_batch
    from .prompts.prompt_set import as_prompt_set

    prompts_path = Path(a["PROMPTS"] or Path(a["OUTPUT_DIR"]) / "prompts.json")
    prompts = guide = None
    if a["headless"] or a["edit"]:
        if a["PROMPTS"] is None and not prompts_path.is_file():
            raise UsageError(f"no prompts file at {prompts_path} (the default, OUTPUT/prompts.json): guide the "
                             "references with `python main.py` first, or name a prompts file with --prompts")
        prompts = as_prompt_set(prompts_path)
    host = None
    if not a["headless"]:
        from .gui import guide_references
        from .gui.hosts import host_for
        from .utils.images import list_images

        refs = [r.image for r in prompts.references] if a["edit"] else (
            list_images(a["REFERENCE_DIR"]) if Path(a["REFERENCE_DIR"]).is_dir() else [])
        if not refs:
            raise UsageError(f"no images in the reference folder {a['REFERENCE_DIR']} (--refs)")
        classes = {**config_classes, **(a["CLASS_NAMES"] or {})}
        host = host_for(a["WEB"], a["WEB_HOST"], a["WEB_PORT"])
        guide = guide_references(refs, classes, prompts_path, existing=prompts, host=host)  # no display: says so now
        prompts = None

    library = {name.lower(): a[name] for name in OPTIONS if hasattr(defaults, name)}  # label_batch's own options
    library["cache"] = False if a["no_cache"] else library["cache"]
    with host.reporting() if host else contextlib.nullcontext():  # a page shows the progress, summary, error
        return label_batch(prompts, a["TARGET_DIR"], a["OUTPUT_DIR"], **library, classes=a["CLASS_NAMES"],
                           force=a["force"], progress=not a["quiet"], stop=stop, guide=guide,
                           on_progress=host.progress if host else None)
