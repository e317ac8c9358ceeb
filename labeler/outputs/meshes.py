"""Optional 3D meshes of labeled objects with SAM 3D Objects (`--mesh`), behind a small interface.

After a batch, every present object (or the best-scoring `limit` per ID) is reconstructed from its
target image and its `id_masks/<stem>_id<k>.png`, and written as `meshes/<stem>_id<k>.glb` (the
mesh, exported by trimesh) and `meshes/<stem>_id<k>.ply` (the Gaussian splat). Everything is read
from what the output folder holds (manifest.json, id_masks), so meshes can follow any finished batch.

Usage:
    reconstructor = load_reconstructor("sam-3d-objects/checkpoints/hf/pipeline.yaml")  # checks only
    ...run the batch...
    summary = write_meshes(Path("output"), targets, reconstructor, limit=None, force=False)

Anything with `reconstruct(image, mask) -> Reconstruction` is a `Reconstructor`; the tests use a
stand-in, since SAM 3D Objects needs a large NVIDIA GPU and gated weights.

SAM 3D Objects' API, as read in github.com/facebookresearch/sam-3d-objects (Nov 2025):
- `README.md`, `demo.py`: the public entry point is `Inference` in `notebook/inference.py`, which is
  not part of the installed package (the demo does `sys.path.append("notebook")`); it is built as
  `Inference(config_path, compile=False)` with `checkpoints/<tag>/pipeline.yaml` (tag `hf`) and called
  as `output = inference(image, mask, seed=42)`; `output["gs"].save_ply(path)` saves the splat.
- `notebook/inference.py`: `Inference.__init__` loads the YAML with OmegaConf, takes its folder as
  the workspace (weights are found relative to it) and hydra-instantiates the pipeline;
  `__call__(image, mask, seed)` puts the mask (HxW, bool) into the alpha channel of the RGB image
  (HxWx3 uint8) and runs the pipeline with vertex colours, no mesh post-processing or texture baking,
  and layout post-processing. The module reads `os.environ["CONDA_PREFIX"]` on import (so it only
  imports inside a conda/mamba environment) and imports kaolin, pytorch3d, gradio, utils3d.
- `sam3d_objects/pipeline/inference_pipeline_pointmap.py` (`run`) and
  `sam3d_objects/pipeline/inference_pipeline.py` (`postprocess_slat_output`): the output dict holds
  `"glb"` (a `trimesh.Trimesh`, or None when the config's `decode_formats` has no "mesh"), `"gs"`
  (the Gaussian, `outputs["gaussian"][0]`), and the object's pose in the camera frame
  (`"rotation"`, `"translation"`, `"scale"`).
- `sam3d_objects/model/backbone/tdfy_dit/utils/postprocessing_utils.py` (`to_glb`): the mesh is in
  the object's own frame, rotated from z-up to y-up (`vertices @ [[1, 0, 0], [0, 0, -1], [0, 1, 0]]`);
  the pose is not applied to it (nor is it here). The Gaussian splat is saved z-up; the adapter
  turns it by the same rotation (positions, normals, orientations), so both files share one y-up frame.
- Its pipeline module fails to import without CUDA (an `UnboundLocalError` in its attention-backend
  setup), so the GPU is checked before it is imported. `Inference.__call__` runs a layout
  post-optimisation that calls `loss.backward()`, so reconstruction runs with gradients enabled.
- `sam3d_objects/model/backbone/tdfy_dit/representations/gaussian/gaussian_model.py` (`save_ply`):
  writes a PLY "vertex" element (x, y, z, normals, f_dc_*, opacity, scale_*, rot_*) with plyfile.
- `doc/setup.md`: Linux, an NVIDIA GPU with at least 32 GB, a mamba environment from
  `environments/default.yml`, `pip install -e '.[dev]'`, `'.[p3d]'`, `'.[inference]'`, a hydra
  patch, and checkpoints from the gated Hugging Face repo facebook/sam-3d-objects.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from tqdm import tqdm

from ..errors import UsageError
from ..utils.files import atomic_write_bytes, atomic_write_text
from ..utils.images import open_image, read_rgb
from .folder import OutputFolder

log = logging.getLogger(__name__)

REPOSITORY = "https://github.com/facebookresearch/sam-3d-objects"
INSTALL_HINT = (
    f"SAM 3D Objects is installed separately: follow {REPOSITORY}/blob/main/doc/setup.md (Linux, an "
    "NVIDIA CUDA GPU with at least 32 GB of memory, its own mamba/conda environment, into which this "
    "labeler is installed with `pip install -e .`), download its checkpoints as that page says, and "
    "pass --sam3d-config <its checkout>/checkpoints/hf/pipeline.yaml"
)
FAILURES = "failures.csv"  # meshes/failures.csv: image,id,error of the objects that could not be made


@dataclass
class Reconstruction:
    """One object in 3D: a trimesh mesh (Trimesh or Scene) and its Gaussian splat as PLY file bytes."""

    mesh: object  # trimesh.Trimesh | trimesh.Scene: anything with export(file_type="glb")
    splat_ply: bytes


@runtime_checkable
class Reconstructor(Protocol):
    """Image (H, W, 3) uint8 RGB and mask (H, W) bool in, one object's mesh and splat out."""

    def reconstruct(self, image: np.ndarray, mask: np.ndarray) -> Reconstruction: ...


class MeshSetupError(Exception):
    """The reconstructor itself can't work (e.g. SAM 3D's weights don't load): no object can be made."""


class Sam3dReconstructor:
    """SAM 3D Objects' `Inference` (from its checkout's notebook/inference.py); the model is built on
    the first `reconstruct`, so that checking the install costs no GPU memory during the batch."""

    def __init__(self, config_path: str | Path, inference_module, seed: int = 42):
        # As given, made absolute: its folder is SAM 3D's workspace, and resolve() would follow a
        # symlinked checkpoints folder into a download cache, away from the weights beside it.
        self.config_path = Path(config_path).absolute()
        self.seed = seed
        self._module = inference_module
        self._inference = None

    def _pipeline(self):
        if self._inference is None:
            try:
                self._inference = self._module.Inference(str(self.config_path), compile=False)
            except Exception as e:  # missing weights, no GPU, a broken config: nothing can be made
                raise MeshSetupError(f"SAM 3D Objects could not be built from {self.config_path}: "
                                     f"{type(e).__name__}: {e}") from e
        return self._inference

    def reconstruct(self, image: np.ndarray, mask: np.ndarray) -> Reconstruction:
        import torch

        # SAM 3D's layout post-optimisation calls loss.backward(): it needs gradients, whatever the caller's mode.
        with torch.inference_mode(False), torch.enable_grad():
            output = self._pipeline()(image, np.asarray(mask, dtype=bool), seed=self.seed)
        mesh, splat = output.get("glb"), output.get("gs")
        if mesh is None:
            raise RuntimeError(f"SAM 3D Objects returned no mesh (does {self.config_path.name} "
                               "decode the 'mesh' format?)")
        if splat is None:
            raise RuntimeError("SAM 3D Objects returned no Gaussian splat")
        with tempfile.TemporaryDirectory(prefix="sam3d-") as tmp:
            ply = Path(tmp) / "splat.ply"
            splat.save_ply(str(ply))
            return Reconstruction(mesh, splat_to_y_up(ply.read_bytes()))


# SAM 3D's to_glb turns z-up vertices to y-up as row vectors: v @ Z_TO_Y_UP.
Z_TO_Y_UP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)


def splat_to_y_up(ply: bytes) -> bytes:
    """A Gaussian splat PLY (SAM 3D's `save_ply` layout), turned from z-up to y-up like the .glb.

    Positions and normals turn by Z_TO_Y_UP; each Gaussian's orientation (rot_0..3, w x y z) is
    composed with the same rotation, -90 degrees about x. Scales, opacity and colour (DC terms)
    don't depend on the frame; higher-order colour terms would, and are refused.
    """
    import plyfile

    data = plyfile.PlyData.read(io.BytesIO(ply))
    vertex = data["vertex"].data
    names = vertex.dtype.names
    if any(n.startswith("f_rest_") for n in names):
        raise ValueError("the splat has view-dependent colour terms (f_rest_*), which this rotation can't turn")
    for x, y, z in (("x", "y", "z"), ("nx", "ny", "nz")):
        if {x, y, z} <= set(names):
            turned = np.stack([vertex[x], vertex[y], vertex[z]], axis=1).astype(np.float64) @ Z_TO_Y_UP
            vertex[x], vertex[y], vertex[z] = turned.T
    if {"rot_0", "rot_1", "rot_2", "rot_3"} <= set(names):
        w, qx, qy, qz = (vertex[f"rot_{k}"].astype(np.float64) for k in range(4))
        c = s = np.sqrt(0.5)  # the frame's quaternion: (cos 45, -sin 45, 0, 0), times q
        vertex["rot_0"], vertex["rot_1"] = c * w + s * qx, c * qx - s * w
        vertex["rot_2"], vertex["rot_3"] = c * qy + s * qz, c * qz - s * qy
    out = io.BytesIO()
    data.write(out)
    return out.getvalue()


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _inference_file(config_path: Path | None) -> tuple[Path | None, str | None]:
    """SAM 3D's notebook/inference.py: beside the installed sam3d_objects package (an editable
    install of its checkout), else in a folder above the config; or None and the reason."""
    try:
        spec = importlib.util.find_spec("sam3d_objects")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return None, "SAM 3D Objects is not installed (Python can't find its package `sam3d_objects`)"
    roots = [Path(spec.origin).resolve().parents[1]]
    if config_path is not None:
        roots += list(config_path.absolute().parents)
    for root in roots:
        if (root / "notebook" / "inference.py").is_file():
            return root / "notebook" / "inference.py", None
    return None, (f"SAM 3D Objects' notebook/inference.py was not found beside its package ({roots[0]}) "
                  "nor above the config: install it from its git checkout (`pip install -e .` there)")


def _import_inference(path: Path):
    """Import SAM 3D's notebook/inference.py under a private name (`inference` is a common name)."""
    name = f"_labeler_sam3d_inference_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_reconstructor(config_path: str | Path | None) -> Reconstructor:
    """SAM 3D Objects with the pipeline.yaml at `config_path`, checked without building the model.

    Raises UsageError naming every problem (no config given, config missing, SAM 3D not installed or
    not importable, no CUDA GPU) and saying what to install and where.
    """
    problems = []
    config = Path(config_path).expanduser() if config_path else None
    if config is None:
        problems.append("no SAM 3D config given: pass --sam3d-config PATH/checkpoints/hf/pipeline.yaml "
                        "(or set SAM3D_CONFIG in config.py)")
    elif not config.is_file():
        problems.append(f"the SAM 3D config {config} does not exist (--sam3d-config)")
    module = None
    path, reason = _inference_file(config)
    if reason:
        problems.append(reason)
    elif not _cuda_available():  # SAM 3D's pipeline module crashes on import without CUDA: don't try
        problems.append("no CUDA GPU is visible to PyTorch; SAM 3D Objects runs only on an NVIDIA GPU")
    else:
        try:
            module = _import_inference(path)
        except KeyError as e:
            problems.append(f"importing {path} failed: environment variable {e} is not set; run inside the "
                            "conda/mamba environment that SAM 3D Objects' setup creates")
        except Exception as e:
            problems.append(f"importing {path} failed ({type(e).__name__}: {e}); "
                            "its dependencies are not all installed")
    if problems:
        raise UsageError("--mesh needs SAM 3D Objects, which is not ready:\n  - "
                         + "\n  - ".join(problems) + "\n" + INSTALL_HINT)
    return Sam3dReconstructor(config, module)


@dataclass
class MeshSummary:
    """What `write_meshes` did: objects chosen, meshes written, already there, failed."""

    objects: int = 0
    written: int = 0
    up_to_date: int = 0
    failures: list[tuple[str, int, str]] = field(default_factory=list)  # (image, id, error)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def __str__(self) -> str:
        return (f"meshes: {self.objects} object(s): {self.written} reconstructed, {self.up_to_date} already "
                f"there, {self.failed} failed" + (f" (listed in meshes/{FAILURES})" if self.failed else ""))


@dataclass
class _Object:
    target: Path
    stem: str
    id: int
    logit: float


def select_objects(output_dir: Path, targets: list[Path], limit: int | None = None) -> tuple[list[_Object], list]:
    """Present objects of the labeled targets, per the manifest (the best `limit` per ID by object
    score when given), in target then ID order; and the (stem, id) of absent ones."""
    present, absent = [], []
    for record in OutputFolder(output_dir).manifest().records(targets):
        if record.status != "labeled":
            continue
        for o in record.objects:
            if o.present:
                present.append(_Object(record.path, record.stem, o.id, o.logit))
            else:
                absent.append((record.stem, o.id))
    if limit is not None:
        keep = set()
        for obj_id in {o.id for o in present}:
            of_id = [i for i, o in enumerate(present) if o.id == obj_id]
            keep.update(sorted(of_id, key=lambda i: -present[i].logit)[:limit])  # stable: earlier target wins ties
        present = [o for i, o in enumerate(present) if i in keep]
    return present, absent


def _up_to_date(glb: Path, ply: Path, mask: Path) -> bool:
    """Both files exist and were written after the object's id mask (a relabeled target's mask is newer)."""
    try:
        return min(glb.stat().st_mtime_ns, ply.stat().st_mtime_ns) >= mask.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    with open_image(path) as img:
        mask = np.asarray(img.convert("L")) > 127
    if mask.shape != tuple(shape):
        raise ValueError(f"{path.name} is {mask.shape[1]}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]} "
                         "(the target changed since it was labeled; rerun the batch)")
    if not mask.any():
        raise ValueError(f"{path.name} is empty")
    return mask


def write_meshes(
    output_dir: Path,
    targets: list[Path],
    reconstructor: Reconstructor,
    limit: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> MeshSummary:
    """Reconstruct the chosen objects of a finished batch into meshes/<stem>_id<k>.glb and .ply.

    Objects whose two files exist and are newer than their id mask are kept unless `force`. Meshes
    of objects now absent are removed. An object that fails is logged and listed in
    meshes/failures.csv (rewritten each run, removed when nothing failed); the others go on. If the
    reconstructor can't be set up at all (MeshSetupError), every remaining object is listed as failed.
    """
    out = OutputFolder(output_dir)
    objects, absent = select_objects(output_dir, targets, limit)
    for stem, obj_id in absent:  # a stale mesh of an object no longer found
        for path in out.mesh_paths(stem, obj_id):
            path.unlink(missing_ok=True)
    summary = MeshSummary(objects=len(objects))
    todo = []
    for obj in objects:
        glb, ply = out.mesh_paths(obj.stem, obj.id)
        if not force and _up_to_date(glb, ply, out.id_mask(obj.stem, obj.id)):
            summary.up_to_date += 1
        else:
            todo.append(obj)
    if todo:
        log.info("reconstructing %d object(s) in 3D (%d already there)", len(todo), summary.up_to_date)
    image_cache: tuple[Path | None, np.ndarray | Exception | None] = (None, None)
    setup_error = None
    for obj in tqdm(todo, unit="obj", disable=not progress):
        name = obj.target.name
        if setup_error is not None:
            summary.failures.append((name, obj.id, setup_error))
            continue
        try:
            if image_cache[0] != obj.target:  # objects come in target order: read each image once
                try:
                    image_cache = (obj.target, read_rgb(obj.target))
                except Exception as e:
                    image_cache = (obj.target, e)
            if isinstance(image_cache[1], Exception):
                raise image_cache[1]
            image = image_cache[1]
            mask = _read_mask(out.id_mask(obj.stem, obj.id), image.shape[:2])
            result = reconstructor.reconstruct(image, mask)
            glb_bytes = result.mesh.export(file_type="glb")
            ply_bytes = bytes(result.splat_ply)
            if not ply_bytes:
                raise ValueError("the reconstructor returned an empty splat")
            glb, ply = out.mesh_paths(obj.stem, obj.id)
            atomic_write_bytes(ply, ply_bytes)
            atomic_write_bytes(glb, glb_bytes)
            summary.written += 1
        except MeshSetupError as e:
            setup_error = str(e)
            log.error("meshes: %s", e)
            summary.failures.append((name, obj.id, setup_error))
        except Exception as e:  # one object's failure doesn't stop the others
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            log.error("mesh of %s ID %d failed: %s", name, obj.id, reason)
            summary.failures.append((name, obj.id, reason))
    _write_failures(out.meshes, summary.failures)
    return summary


def _write_failures(folder: Path, failures: list[tuple[str, int, str]]) -> None:
    path = folder / FAILURES
    if not failures:
        path.unlink(missing_ok=True)
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "id", "error"])
    writer.writerows(failures)
    atomic_write_text(path, buf.getvalue())
