"""`--mesh`: SAM 3D meshes of labeled objects, through the Reconstructor interface.

SAM 3D Objects can't run here (it needs a 32 GB NVIDIA GPU and gated weights), so the whole `--mesh`
path runs with a stand-in reconstructor, the SAM 3D adapter runs against a fake checkout that has
the API its repository documents, and a missing install is shown to stop the run before the batch.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from helpers import IMAGE_SIZE, ROOT
from PIL import Image

from labeler import cli
from labeler.errors import UsageError
from labeler.outputs import meshes
from labeler.outputs.meshes import Reconstruction, Reconstructor, write_meshes

DEMO_PROMPTS = ROOT / "assets/demo/prompts.json"
DEMO_TARGETS = ROOT / "assets/demo/targets"
TARGETS = sorted(DEMO_TARGETS.iterdir())


class StandIn:
    """A reconstructor: a box over the mask's bounding box and, as its "splat", one point per mask pixel.

    `fail_on`: call numbers (from 0) that raise instead.
    """

    def __init__(self, fail_on=()):
        self.fail_on = set(fail_on)
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def reconstruct(self, image: np.ndarray, mask: np.ndarray) -> Reconstruction:
        n = len(self.calls)
        self.calls.append((image, mask))
        if n in self.fail_on:
            raise RuntimeError(f"stand-in failure on call {n}")
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        box = trimesh.creation.box(extents=(x1 - x0, y1 - y0, min(x1 - x0, y1 - y0)))
        box.apply_translation(((x0 + x1) / 2, (y0 + y1) / 2, 0))
        points = trimesh.PointCloud(np.stack([xs, ys, np.zeros_like(xs)], 1).astype(np.float64))
        return Reconstruction(box, points.export(file_type="ply"))


def present_rows(out: Path) -> list[dict]:
    return [r for r in csv.DictReader(open(out / "results.csv")) if r["status"] == "present"]


def mask_of(out: Path, stem: str, obj_id: int) -> np.ndarray:
    return np.asarray(Image.open(out / "id_masks" / f"{stem}_id{obj_id}.png")) == 255


def check_pair(out: Path, stem: str, obj_id: int) -> None:
    """Both files reload with trimesh and match the object's id mask (the stand-in's geometry)."""
    mask = mask_of(out, stem, obj_id)
    ys, xs = np.nonzero(mask)
    mesh = trimesh.load(out / "meshes" / f"{stem}_id{obj_id}.glb", force="mesh")
    assert len(mesh.faces) == 12  # the box
    np.testing.assert_allclose(mesh.bounds[:, :2], [[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]])
    splat = trimesh.load(out / "meshes" / f"{stem}_id{obj_id}.ply")
    assert isinstance(splat, trimesh.PointCloud) and len(splat.vertices) == mask.sum()


def mesh_files(out: Path) -> set[str]:
    return {p.name for p in (out / "meshes").iterdir()} if (out / "meshes").exists() else set()


def pair_names(keys) -> set[str]:
    return {f"{s}_id{k}{ext}" for s, k in keys for ext in (".glb", ".ply")}


def run_cli(out: Path, *extra, reconstructor: Reconstructor | None = None, checkpoint=None) -> int:
    """`main.py --headless` in this process, with load_reconstructor answering `reconstructor`."""
    args = ["--headless", "--quiet", "--prompts", str(DEMO_PROMPTS), "--targets", str(DEMO_TARGETS),
            "--output", str(out), "--checkpoint", str(checkpoint), "--image-size", str(IMAGE_SIZE), *map(str, extra)]
    grad = torch.is_grad_enabled()
    with pytest.MonkeyPatch.context() as mp:
        if reconstructor is not None:
            mp.setattr(meshes, "load_reconstructor", lambda config: reconstructor)
        try:
            return cli.main(args, config_path=Path("/nonexistent/config.py"))
        finally:
            torch.set_grad_enabled(grad)  # the run turns autograd off for the process


@pytest.fixture(scope="module")
def labeled(test_checkpoint, tmp_path_factory):
    """The bundled demo labeled once with `--mesh` and the stand-in: (output folder, stand-in, exit code)."""
    out = tmp_path_factory.mktemp("mesh") / "out"
    standin = StandIn()
    code = run_cli(out, "--mesh", "--sam3d-config", "unused.yaml", reconstructor=standin, checkpoint=test_checkpoint)
    return out, standin, code


@pytest.fixture
def copy_of(labeled, tmp_path):
    """A fresh copy of the labeled output folder, without its meshes."""
    out = tmp_path / "out"
    shutil.copytree(labeled[0], out)
    shutil.rmtree(out / "meshes")
    return out


def keys_of(rows) -> list[tuple[str, int]]:
    return [(Path(r["image"]).stem, int(r["id"])) for r in rows]


def test_mesh_run_writes_a_pair_per_present_object(labeled):
    out, standin, code = labeled
    assert code == 0
    rows = present_rows(out)
    per_id = {k: sum(int(r["id"]) == k for r in rows) for k in (1, 2)}
    assert min(per_id.values()) >= 2, f"the demo should find each object on several targets: {per_id}"
    assert mesh_files(out) == pair_names(keys_of(rows))
    for stem, obj_id in keys_of(rows):
        check_pair(out, stem, obj_id)
    # The reconstructor saw each target image with each object's own mask.
    assert len(standin.calls) == len(rows)
    for (image, mask), (stem, obj_id) in zip(standin.calls, keys_of(rows)):
        target = DEMO_TARGETS / f"{stem}.jpg"
        assert image.shape == np.asarray(Image.open(target)).shape and image.dtype == np.uint8
        np.testing.assert_array_equal(mask, mask_of(out, stem, obj_id))


def test_rerun_makes_only_missing_meshes_and_force_makes_all(labeled, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(labeled[0], out)
    rows = present_rows(out)
    (out / "meshes" / f"{keys_of(rows)[0][0]}_id{keys_of(rows)[0][1]}.ply").unlink()
    standin = StandIn()
    summary = write_meshes(out, TARGETS, standin)
    assert (summary.written, summary.up_to_date, len(standin.calls)) == (1, len(rows) - 1, 1)
    assert mesh_files(out) == pair_names(keys_of(rows))
    summary = write_meshes(out, TARGETS, standin, force=True)
    assert summary.written == len(rows) and len(standin.calls) == 1 + len(rows)


def test_mesh_limit_keeps_the_best_scoring_object_per_id(labeled, copy_of, test_checkpoint, caplog):
    out = copy_of
    standin = StandIn()
    caplog.set_level(logging.INFO)
    assert run_cli(out, "--mesh", "--mesh-limit", 1, reconstructor=standin, checkpoint=test_checkpoint) == 0
    assert "0 labeled, 6 already labeled" in caplog.text  # the rerun kept the labels, made the meshes
    rows = present_rows(out)
    best = [max((r for r in rows if r["id"] == k), key=lambda r: float(r["logit"])) for k in ("1", "2")]
    assert mesh_files(out) == pair_names(keys_of(best))
    for stem, obj_id in keys_of(best):
        check_pair(out, stem, obj_id)
    assert len(standin.calls) == 2
    summary = write_meshes(out, TARGETS, StandIn(), limit=2)
    assert summary.objects == 4 and summary.up_to_date == 2 and summary.written == 2


def test_a_failed_object_is_recorded_and_the_others_go_on(copy_of, caplog):
    out = copy_of
    rows = present_rows(out)
    summary = write_meshes(out, TARGETS, StandIn(fail_on={1}))
    failed = keys_of(rows)[1]
    assert summary.failed == 1 and summary.written == len(rows) - 1
    assert mesh_files(out) == pair_names(k for k in keys_of(rows) if k != failed) | {"failures.csv"}
    table = list(csv.DictReader(open(out / "meshes" / "failures.csv")))
    assert [(Path(r["image"]).stem, int(r["id"])) for r in table] == [failed]
    assert "stand-in failure on call 1" in table[0]["error"]
    assert "stand-in failure on call 1" in caplog.text
    # The rerun makes the missing one only, and failures.csv goes.
    standin = StandIn()
    summary = write_meshes(out, TARGETS, standin)
    assert summary.written == 1 and summary.failed == 0 and len(standin.calls) == 1
    assert mesh_files(out) == pair_names(keys_of(rows))


def test_relabeled_masks_are_remade_and_absent_objects_lose_their_meshes(copy_of):
    out = copy_of
    rows = present_rows(out)
    write_meshes(out, TARGETS, StandIn())
    # Relabeling rewrites a mask (newer than its mesh) ...
    stem, obj_id = keys_of(rows)[0]
    mask_path = out / "id_masks" / f"{stem}_id{obj_id}.png"
    later = (out / "meshes" / f"{stem}_id{obj_id}.glb").stat().st_mtime_ns + 10**9
    os.utime(mask_path, ns=(later, later))
    # ... and an object found no more keeps no mesh (as the manifest says after a relabel).
    manifest = json.loads((out / "manifest.json").read_text())
    gone_stem, gone_id = keys_of(rows)[-1]
    for entry in manifest["targets"].values():
        for obj in entry["objects"]:
            if entry["stem"] == gone_stem and obj["id"] == gone_id:
                obj["present"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    standin = StandIn()
    summary = write_meshes(out, TARGETS, standin)
    assert summary.written == 1 and len(standin.calls) == 1
    np.testing.assert_array_equal(standin.calls[0][1], mask_of(out, stem, obj_id))
    assert mesh_files(out) == pair_names(keys_of(rows)[:-1])


# --- The SAM 3D Objects adapter, against a fake checkout with the documented API ---

FAKE_INFERENCE = '''
"""Stands for sam-3d-objects' notebook/inference.py: `Inference(config, compile=False)(image, mask, seed)`,
with the behaviours of the real one that matter: no import without CUDA, a backward pass in every call,
a y-up mesh and a z-up splat."""
import os

import numpy as np
import torch
import trimesh

if os.environ.get("LABELER_FAKE_SAM3D_CUDA") != "1":  # its attention-backend setup, without CUDA
    raise UnboundLocalError("cannot access local variable 'backend' where it is not associated with a value")
CALLS = []
Z_TO_Y_UP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
{setup}

class Gaussian:
    """Writes a PLY laid out as SAM 3D's Gaussian.save_ply does (a "vertex" element of floats)."""
    NAMES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]

    def __init__(self, xyz, rot):
        self.xyz, self.rot = xyz, rot

    def save_ply(self, path):
        data = np.zeros((len(self.xyz), len(self.NAMES)), "<f4")
        data[:, :3] = self.xyz
        data[:, 3:6] = self.xyz  # normals: any vectors in the same frame
        data[:, 13:17] = self.rot
        header = ("ply\\nformat binary_little_endian 1.0\\nelement vertex %d\\n" % len(self.xyz)
                  + "".join("property float %s\\n" % n for n in self.NAMES) + "end_header\\n")
        with open(path, "wb") as f:
            f.write(header.encode() + data.tobytes())


class Inference:
    def __init__(self, config_file, compile=False):
        {init}
        CALLS.append(("init", config_file, compile))

    def __call__(self, image, mask, seed=None, pointmap=None):
        CALLS.append(("call", image.shape, image.dtype, mask.dtype, int(mask.sum()), seed))
        shift = torch.zeros(3, requires_grad=True)  # the layout post-optimisation: fails without gradients
        (shift - 1).pow(2).sum().backward()
        points = trimesh.creation.icosphere(subdivisions=1).vertices * [1.0, 2.0, 3.0]  # z-up, as SAM 3D decodes
        mesh = trimesh.Trimesh(points @ Z_TO_Y_UP, trimesh.creation.icosphere(subdivisions=1).faces)  # to_glb
        rot = np.random.default_rng(int(mask.sum())).normal(size=(len(points), 4))
        return {{"glb": mesh, "gs": Gaussian(points, rot / np.linalg.norm(rot, axis=1, keepdims=True)),
                 "rotation": None, "translation": None, "scale": None}}
'''


def fake_checkout(root: Path, setup: str = "", init: str = "pass") -> Path:
    """A SAM 3D checkout as its setup leaves it: sam3d_objects/, notebook/inference.py, and
    checkpoints/hf/pipeline.yaml, with checkpoints/hf a link into a download cache. Returns the config path."""
    (root / "sam3d_objects").mkdir(parents=True)
    (root / "sam3d_objects" / "__init__.py").write_text("")
    (root / "notebook").mkdir()
    (root / "notebook" / "inference.py").write_text(FAKE_INFERENCE.format(setup=setup, init=init))
    cache = root.parent / "hf-cache" / "sam-3d-objects"
    cache.mkdir(parents=True)
    (cache / "pipeline.yaml").write_text("_target_: sam3d_objects.pipeline.inference_pipeline_pointmap.InferencePipelinePointMap\n")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "hf").symlink_to(cache)
    return root / "checkpoints" / "hf" / "pipeline.yaml"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Install a fake checkout (on sys.path) and pretend to have a CUDA GPU; returns its config path."""
    def install(cuda: bool = True, **kwargs):
        config = fake_checkout(tmp_path / "sam-3d-objects", **kwargs)
        monkeypatch.syspath_prepend(str(tmp_path / "sam-3d-objects"))
        monkeypatch.setattr(meshes, "_cuda_available", lambda: cuda)
        monkeypatch.setenv("LABELER_FAKE_SAM3D_CUDA", "1" if cuda else "0")
        return config
    return install


def test_sam3d_adapter_drives_the_documented_api(installed, copy_of, tmp_path):
    config = installed()
    reconstructor = meshes.load_reconstructor(config)
    assert isinstance(reconstructor, meshes.Sam3dReconstructor) and isinstance(reconstructor, Reconstructor)
    calls = reconstructor._module.CALLS
    assert calls == []  # checking the install builds nothing
    out = copy_of
    rows = present_rows(out)
    with torch.no_grad(), torch.inference_mode():  # gradients off in the caller: SAM 3D's backward must still run
        summary = write_meshes(out, TARGETS, reconstructor, limit=1)
    assert summary.written == 2 and summary.failed == 0, summary.failures
    # Built once, from the config path as given (absolute), not resolved into the download cache.
    assert calls[0] == ("init", str(config.absolute()), False) and config.absolute() != config.resolve()
    assert [c[0] for c in calls[1:]] == ["call", "call"]
    for _, shape, image_dtype, mask_dtype, area, seed in calls[1:]:
        assert len(shape) == 3 and shape[2] == 3 and image_dtype == np.uint8 and mask_dtype == bool and seed == 42
    for name in mesh_files(out):
        loaded = trimesh.load(out / "meshes" / name)
        if name.endswith(".ply"):  # SAM 3D's splat layout reloads as a point cloud, in the mesh's y-up frame
            assert isinstance(loaded, trimesh.PointCloud)
            mesh = trimesh.load(out / "meshes" / name.replace(".ply", ".glb"), force="mesh")
            np.testing.assert_allclose(loaded.vertices, mesh.vertices, atol=1e-5)
        else:
            assert len(trimesh.load(out / "meshes" / name, force="mesh").faces) == 80  # the icosphere
    assert len(mesh_files(out)) == 4 and len(rows) > 2


def test_sam3d_that_cannot_be_built_fails_every_object_once(installed, copy_of, caplog):
    config = installed(init='raise FileNotFoundError("checkpoints/hf/ss_generator.ckpt")')
    summary = write_meshes(copy_of, TARGETS, meshes.load_reconstructor(config))
    rows = present_rows(copy_of)
    assert summary.failed == len(rows) and summary.written == 0
    table = list(csv.DictReader(open(copy_of / "meshes" / "failures.csv")))
    assert len(table) == len(rows) and all("ss_generator.ckpt" in r["error"] for r in table)
    assert caplog.text.count("could not be built") == 1


def test_sam3d_outside_its_environment_says_so(installed):
    config = installed(setup='import os\nos.environ["CUDA_HOME"] = os.environ["LABELER_TEST_NO_SUCH_VARIABLE"]')
    with pytest.raises(UsageError, match="conda/mamba environment") as e:
        meshes.load_reconstructor(config)
    assert "doc/setup.md" in str(e.value)


def test_sam3d_without_a_gpu_says_so_without_importing_it(installed):
    config = installed(cuda=False)
    with pytest.raises(UnboundLocalError):  # the stand-in, like SAM 3D, can't even be imported without CUDA
        meshes._import_inference(config.parents[2] / "notebook" / "inference.py")
    with pytest.raises(UsageError, match="no CUDA GPU") as e:
        meshes.load_reconstructor(config)
    assert "importing" not in str(e.value) and "dependencies" not in str(e.value)


def quaternion_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def test_splat_turns_into_the_meshs_y_up_frame():
    import plyfile

    rng = np.random.default_rng(0)
    xyz, rot = rng.normal(size=(20, 3)), rng.normal(size=(20, 4))
    rot /= np.linalg.norm(rot, axis=1, keepdims=True)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "opacity", "scale_0", "rot_0", "rot_1", "rot_2", "rot_3"]
    data = np.zeros(20, dtype=[(n, "<f4") for n in names])
    for k, n in enumerate("xyz"):
        data[n], data[f"n{n}"] = xyz[:, k], xyz[:, k]
    for k in range(4):
        data[f"rot_{k}"] = rot[:, k]
    data["scale_0"], data["f_dc_0"] = 0.5, 0.25
    buf = io.BytesIO()
    plyfile.PlyData([plyfile.PlyElement.describe(data, "vertex")]).write(buf)
    turned = plyfile.PlyData.read(io.BytesIO(meshes.splat_to_y_up(buf.getvalue())))["vertex"].data
    z_to_y = meshes.Z_TO_Y_UP
    np.testing.assert_allclose(np.stack([turned[n] for n in "xyz"], 1), xyz @ z_to_y, atol=1e-6)
    np.testing.assert_allclose(np.stack([turned[f"n{n}"] for n in "xyz"], 1), xyz @ z_to_y, atol=1e-6)
    for q, q_turned in zip(rot, np.stack([turned[f"rot_{k}"] for k in range(4)], 1)):
        # Each Gaussian's axes turn with the frame: R(q') = Z_TO_Y_UP^T R(q) (column vectors).
        np.testing.assert_allclose(quaternion_matrix(q_turned), z_to_y.T @ quaternion_matrix(q), atol=1e-6)
    assert (turned["scale_0"] == 0.5).all() and (turned["f_dc_0"] == 0.25).all()


def test_missing_config_is_named_with_sam3d_installed(installed, tmp_path):
    installed()
    with pytest.raises(UsageError) as e:
        meshes.load_reconstructor(tmp_path / "nowhere" / "pipeline.yaml")
    assert str(tmp_path / "nowhere" / "pipeline.yaml") in str(e.value) and "not installed" not in str(e.value)


# --- Without SAM 3D Objects (this machine): the run stops before the batch ---

needs_no_sam3d = pytest.mark.skipif(importlib.util.find_spec("sam3d_objects") is not None,
                                    reason="SAM 3D Objects is installed here")


def run_main(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "--headless", "--quiet", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@needs_no_sam3d
def test_mesh_without_sam3d_stops_before_the_batch(tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "sam-3d-objects" / "checkpoints" / "hf" / "pipeline.yaml"
    result = run_main("--prompts", DEMO_PROMPTS, "--targets", DEMO_TARGETS, "--output", out,
                      "--checkpoint", "none", "--mesh", "--sam3d-config", config)
    assert result.returncode == 2, result.stderr
    assert "SAM 3D Objects is not installed" in result.stderr
    assert str(config) in result.stderr and "does not exist" in result.stderr
    assert "github.com/facebookresearch/sam-3d-objects" in result.stderr and "doc/setup.md" in result.stderr
    assert "GPU" in result.stderr
    assert "SAM 2.1" not in result.stderr  # the model was never built
    assert not out.exists()


@needs_no_sam3d
def test_mesh_without_a_config_says_which_option(tmp_path):
    result = run_main("--prompts", DEMO_PROMPTS, "--targets", DEMO_TARGETS, "--output", tmp_path / "out",
                      "--checkpoint", "none", "--mesh")
    assert result.returncode == 2 and "--sam3d-config" in result.stderr
    assert not (tmp_path / "out").exists()
