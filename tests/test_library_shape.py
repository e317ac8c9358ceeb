"""The library's shape: imports flow one way, importing changes nothing, one source of defaults, a thin CLI."""

from __future__ import annotations

import ast
import inspect
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run_main

PACKAGE = ROOT / "labeler"
# The package's layers, lowest first: data flows up (prompts -> the model backend -> the batch -> files), and a
# package may import only the packages below it (function-level imports included). A new module needs no entry.
LAYERS = ["errors", "defaults", "utils", "types", "prompts", "models", "outputs", "exports", "batch", "review", "api",
          "gui", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    return module.split(".")[0]


def imported_modules(path: Path) -> set[str]:
    """The labeler modules `path` imports (anywhere in it), as names relative to the package."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("labeler"):
                target = node.module.removeprefix("labeler").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import internals` imports a module
                sub = f"{target}.{alias.name}".lstrip(".")
                is_module = (PACKAGE / f"{sub.replace('.', '/')}.py").exists() or (PACKAGE / sub.replace(".", "/")).is_dir()
                found.add(sub if is_module else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("labeler.") for a in node.names if a.name.startswith("labeler.")}
    return found - {"", name}


def test_imports_flow_one_way():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if module_name(p)}
    assert {layer(m) for m in modules} <= set(LAYERS), "a new top-level package needs its place in LAYERS"
    imports = {name: imported_modules(path) for name, path in modules.items()}
    upward = [f"{name} imports {target}" for name, targets in imports.items() for target in targets
              if LAYERS.index(layer(target)) > LAYERS.index(layer(name))]
    assert not upward
    # Inside a package: no cycles (a module's imports, followed, never come back to it).
    def reaches(start, goal, seen):
        for nxt in imports.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False
    assert not [name for name in modules if reaches(name, name, set())], "import cycle"


def test_only_one_module_reaches_into_sam2_internals():
    private = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if any(s in p.read_text() for s in ("._run_single", "_forward_sam_heads", '["output_dict_per_obj"]',
                                                   "_prepare_memory_conditioned", "from sam2.modeling", "sam2.utils"))}
    assert private == {"models/sam2/internals.py", "models/sam3/internals.py"}  # SAM 3's tracker: its own


def test_the_sam2_version_check_stops_a_mismatch():
    from labeler.errors import UsageError
    from labeler.models.sam2.internals import SAM2_VERSION, check_sam2_version

    check_sam2_version()  # the installed one passes
    with pytest.raises(UsageError, match=rf"\(rf-sam-2\) 9.9.9 is installed.*rf-sam-2=={SAM2_VERSION}"):
        check_sam2_version("9.9.9")
    # At import, in a fresh process whose installed version reads as another.
    code = ("import importlib.metadata as m; m.version = lambda name: '1.0.4'\n"
            "from labeler.errors import UsageError\n"
            "try:\n    import labeler.models.sam2.internals\nexcept UsageError as e:\n    print('STOPPED', e)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "STOPPED" in result.stdout and "1.0.4 is installed" in result.stdout and "1.0.3" in result.stdout


def test_importing_labeler_changes_nothing_process_wide():
    code = (
        "import sys, warnings\n"
        "import labeler\n"
        "print('TORCH', 'torch' in sys.modules)\n"
        # Third-party packages add warnings filters of their own when imported: import them first.
        "import torch, sam2.build_sam, cv2, matplotlib, pycocotools.mask, tqdm\n"
        "from PIL import Image\n"
        "filters, limit = list(warnings.filters), Image.MAX_IMAGE_PIXELS\n"
        "for name in labeler.__all__: getattr(labeler, name)\n"  # every public name, loaded
        "from labeler.utils.images import read_rgb; read_rgb('assets/demo/targets/target01.jpg')\n"
        "print('SAME', warnings.filters == filters, Image.MAX_IMAGE_PIXELS == limit, torch.is_grad_enabled())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "TORCH False" in result.stdout and "SAME True True True" in result.stdout, result.stdout + result.stderr


def test_public_names():
    import labeler

    assert set(labeler.__all__) >= {"PromptSet", "ReferenceGuides", "ObjectGuides", "Labeler", "Detection",
                                    "label_batch", "UsageError"}
    with pytest.raises(AttributeError):
        labeler.not_a_name  # noqa: B018
    assert {f for f in labeler.Detection.__dataclass_fields__} >= {"id", "class_name", "present", "logit", "mask"}


def test_argument_errors_answer_without_torch():
    code = ("import sys; from labeler.cli import main\n"
            "try:\n    main(['--bad-option'])\nexcept SystemExit as e:\n    print('EXIT', e.code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "EXIT 2 False" in result.stdout and "unrecognized arguments: --bad-option" in result.stderr


def test_one_source_of_defaults():
    import labeler
    from labeler import defaults
    from labeler.cli import OPTIONS, _parser

    config = runpy.run_path(str(ROOT / "config.py"))
    api = {**inspect.signature(labeler.label_batch).parameters,
           **inspect.signature(labeler.Labeler.from_pretrained).parameters}
    no_config = vars(_parser({}).parse_args([]))
    with_config = vars(_parser({k: v for k, v in config.items() if k in OPTIONS}).parse_args([]))
    for name in ("MODEL", "CHECKPOINT", "IMAGE_SIZE", "DEVICE", "PRECISION", "MEMORY", "THRESHOLD", "BATCH_SIZE",
                 "FORMATS", "YOLO_VAL", "REVIEWED_ONLY", "MESH", "MESH_LIMIT", "SAM3D_CONFIG", "EXECUTOR", "WORKERS",
                 "RAY_ADDRESS"):
        same = (lambda v: list(v)) if name == "FORMATS" else (lambda v: v)  # config.py writes [] for ()
        value = same(getattr(defaults, name))
        assert same(api[name.lower()].default) == value, name
        assert same(no_config[name]) == same(with_config[name]) == same(config[name]) == value, name


def test_help_shows_defaults_and_the_download_command():
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    text = " ".join(result.stdout.split())
    assert result.returncode == 0
    for shown in ("--memory {refs,chain}", "(default: refs)", "(default: tiny)", "(default: auto)",
                  "(default: assets/demo/targets)", "download", "--classes"):
        assert shown in text, shown
    download = subprocess.run([sys.executable, str(ROOT / "main.py"), "download", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert "checkpoints/sam2.1_hiera_MODEL.pt" in " ".join(download.stdout.split())


def test_cli_is_a_thin_shell():
    # The options table takes a line or two per option (cache, executor); the rest must stay small.
    assert len((PACKAGE / "cli.py").read_text().splitlines()) < 175


@pytest.mark.parametrize("args, message", [
    (["--image-size", "100"], "multiple of 32"),
    (["--device", "cuda"], "not available"),
    (["--checkpoint", "TEXT"], "not a PyTorch checkpoint"),
])
def test_exit_2_leaves_nothing_behind(tmp_path, args, message):
    if args == ["--device", "cuda"] and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    args = [str(text) if a == "TEXT" else a for a in args]
    out = tmp_path / "out"
    checkpoint = [] if "--checkpoint" in args else ["--checkpoint", "none"]
    result = run_main("--prompts", ROOT / "assets/demo/prompts.json", "--targets", ROOT / "assets/demo/targets",
                      "--output", out, *checkpoint, *args)
    assert result.returncode == 2 and message in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not out.exists()


def test_missing_prompts_named_with_prompts_gets_no_advice_to_pass_prompts(tmp_path):
    result = run_main("--prompts", tmp_path / "nope.json", "--targets", "assets/demo/targets",
                      "--output", tmp_path / "out", "--checkpoint", "none")
    assert result.returncode == 2 and f"no prompts file at {tmp_path / 'nope.json'}" in result.stderr
    assert "--prompts" not in result.stderr


def test_classes_option_overrides_the_prompts_class_names(test_checkpoint, tmp_path):
    out = tmp_path / "out"
    result = run_main("--prompts", "assets/demo/prompts.json", "--targets", "assets/demo/targets", "--output", out,
                      "--checkpoint", test_checkpoint, "--image-size", "128", "--classes", "1=scratch")
    assert result.returncode == 0, result.stderr
    rows = (out / "results.csv").read_text().splitlines()[1:]
    assert {r.split(",")[1:3][1] for r in rows if r.split(",")[1] == "1"} == {"scratch"}
    assert {r.split(",")[1:3][1] for r in rows if r.split(",")[1] == "2"} == {"square"}  # the prompts' own
    bad = run_main("--classes", "one=scratch")
    assert bad.returncode == 2 and "ID=name pairs" in bad.stderr


def test_manifest_records_the_run_settings(test_checkpoint, tmp_path):
    import json

    out = tmp_path / "out"
    assert run_main("--prompts", "assets/demo/prompts.json", "--targets", "assets/demo/targets", "--output", out,
                    "--checkpoint", test_checkpoint, "--image-size", "128", "--threshold", "0.5").returncode == 0
    from labeler.models.common import resolve_precision

    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings == {"model": "tiny", "checkpoint": str(Path(test_checkpoint).absolute()), "image_size": 128,
                        "device": "cpu", "precision": resolve_precision("auto", "cpu"), "memory": "refs",
                        "threshold": 0.5, "formats": [], "taught": [],
                        "targets": os.path.relpath(ROOT / "assets/demo/targets", out)}
