"""`--executor ray` on a real local Ray instance (2 CPUs, no mocks): the same bytes as the local executor,
nothing lost when a worker dies, Ctrl-C and resume, a moved folder resumes.

The in-process tests share one Ray instance (starting one takes seconds here); the Ctrl-C test runs the
command line, which starts its own. Images: `conftest.make_inputs` (eight targets of three sizes, one
unreadable), model input 128 px, the feature cache off (so every run computes what it writes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

try:
    import ray
except ImportError:  # an optional extra: CI installs it (.ci/run), so there a missing Ray is a failure
    if os.environ.get("CI"):
        raise
    pytest.skip('Ray is not installed: pip install -e ".[ray]"', allow_module_level=True)

from helpers import ROOT, files_of, make_inputs, run_main  # noqa: E402

import labeler  # noqa: E402
from labeler.batch.recorder import BatchRecorder  # noqa: E402
from labeler.outputs.folder import OutputFolder  # noqa: E402
from labeler.types.detections import Detection  # noqa: E402
from labeler.utils.images import list_images, read_rgb  # noqa: E402

SIZE = 128
FORMATS = ("coco",)  # exports come from the recorded files and records; YOLO's joining of parts is slow on noise masks


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    prompts_file, targets = make_inputs(root)
    return root, prompts_file, targets


def run(inputs, checkpoint, out: str, **kwargs):
    root, prompts_file, targets = inputs
    return labeler.label_batch(prompts_file, targets=targets, output=root / out, checkpoint=checkpoint,
                               image_size=SIZE, formats=FORMATS, cache=False, progress=False, **kwargs)


@pytest.fixture(scope="module")
def local(inputs, test_checkpoint):
    """The local executor's folders at batch size 1 and 3: what every Ray run must equal, byte for byte."""
    for b in (1, 3):
        summary = run(inputs, test_checkpoint, f"local{b}", batch_size=b)
        assert (summary.labeled, summary.failed) == (7, 1)
    return {b: files_of(inputs[0] / f"local{b}") for b in (1, 3)}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_two_workers_write_the_local_executors_bytes(ray_instance, inputs, test_checkpoint, local, batch_size):
    summary = run(inputs, test_checkpoint, f"ray{batch_size}", batch_size=batch_size, executor="ray", workers=2)
    assert (summary.labeled, summary.failed, summary.interrupted) == (7, 1, False)
    assert files_of(inputs[0] / f"ray{batch_size}") == local[batch_size]  # every file, manifest.json included


def test_a_killed_worker_loses_no_target(ray_instance, inputs, test_checkpoint, local, caplog):
    out = inputs[0] / "killed"
    killed = []

    def kill_one_worker_once_a_target_is_written():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list((out / "overlays").glob("*.jpg")):
            time.sleep(0.05)
        name = sorted(n for n in ray.util.list_named_actors() if n.startswith("labeler-"))[0]
        ray.kill(ray.get_actor(name))
        killed.append(name)

    killer = threading.Thread(target=kill_one_worker_once_a_target_is_written)
    killer.start()
    summary = run(inputs, test_checkpoint, "killed", executor="ray", workers=2)
    killer.join()
    assert killed and any(" died " in r.getMessage() for r in caplog.records), "no worker was killed mid-batch"
    assert (summary.labeled, summary.failed) == (7, 1)
    assert files_of(out) == local[1]
    assert not list(out.rglob("*.tmp"))


class ExitsOn:
    """A labeler factory for a stand-in that ends its worker's process on one chosen image.

    The executor takes a labeler factory, so a test can do this: nothing makes a real SAM 2 die on one
    image of our choosing, yet a segfault in a decoder or the kernel's OOM killer does exactly that. The
    stand-in finds every object on every other target (a full mask) without any model, so it is fast.
    """

    def __init__(self, pixels_sha256: str):
        self.pixels_sha256 = pixels_sha256

    def __call__(self):
        return StandIn(self.pixels_sha256), None  # (labeler, prepare): it needs no model input


class StandIn:
    object_ids = [1]
    features = None  # no feature cache

    def __init__(self, pixels_sha256: str):
        self.pixels_sha256 = pixels_sha256

    def label_many(self, rgbs, hashes=None):
        if any(hashlib.sha256(rgb.tobytes()).hexdigest() == self.pixels_sha256 for rgb in rgbs):
            os._exit(1)  # the worker process ends here, as in a crash: no exception, no reply
        return [[Detection(1, 2.0, np.ones(rgb.shape[:2], bool), True, "disc")] for rgb in rgbs]

    def label(self, rgb):
        return self.label_many([rgb])[0]


def test_a_target_that_kills_its_worker_twice_is_failed_and_the_rest_labeled(ray_instance, inputs, tmp_path,
                                                                             caplog):
    from labeler.batch.ray_executor import ray_cluster

    targets = list_images(inputs[2])
    deadly = inputs[2] / "t21.jpg"
    factory = ExitsOn(hashlib.sha256(read_rgb(deadly).tobytes()).hexdigest())
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers don't import tests/
    with ray_cluster(workers=2) as cluster:
        # Batch size 2: [t21, t22] kills a worker twice as a chunk, then t21 kills one more, alone.
        recorder = BatchRecorder(tmp_path / "out", targets, {1: "disc"}, "fingerprint", progress=False)
        summary = cluster.run_batch(factory, recorder, batch_size=2)
    manifest = OutputFolder(tmp_path / "out").manifest()
    status = {t.name: manifest.status(t) for t in targets}
    assert status == {t.name: "failed" if t.name in ("t21.jpg", "broken.jpg") else "labeled" for t in targets}
    assert "died twice while labeling it" in manifest.get(deadly).error
    assert (summary.labeled, summary.failed) == (6, 2)
    assert sum(r.getMessage().startswith("worker") and " died " in r.getMessage() for r in caplog.records) == 3
    assert (tmp_path / "out" / "overlays" / "t22.jpg").is_file() and not list(tmp_path.rglob("*.tmp"))


def test_sigint_stops_the_workers_and_the_same_command_resumes(ray_instance, inputs, test_checkpoint, local):
    root, prompts_file, targets = inputs
    out = root / "sigint"
    command = [sys.executable, str(ROOT / "main.py"), "--headless", "--quiet", "--prompts", str(prompts_file),
               "--targets", str(targets), "--output", str(out), "--checkpoint", str(test_checkpoint),
               "--image-size", str(SIZE), "--formats", ",".join(FORMATS), "--no-cache", "--executor", "ray",
               "--workers", "2", "--ray-address", "auto"]  # the tests' Ray instance: no start-up of its own
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while first.poll() is None and time.monotonic() < deadline and not list((out / "overlays").glob("*.jpg")):
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    labeled = [t for t in list_images(targets) if OutputFolder(out).manifest().status(t) == "labeled"]
    assert 0 < len(labeled) < 7 and not (out / "report.png").exists()
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 1, second.stderr  # broken.jpg
    assert f"{len(labeled)} already labeled" in second.stderr
    assert files_of(out) == local[1]


def test_a_moved_folder_resumes_without_relabeling(ray_instance, inputs, test_checkpoint, local, tmp_path):
    """The whole tree (references, targets, prompts, the local executor's output) at another path, its files
    with new times, as on another machine: the Ray executor resumes it."""
    root = inputs[0]
    moved = tmp_path / "elsewhere"
    for name in ("refs", "targets", "prompts.json", "local1"):
        (shutil.copytree if (root / name).is_dir() else shutil.copy)(root / name, moved / name)
    later = time.time() + 3600
    for path in moved.rglob("*"):
        os.utime(path, (later, later))
    summary = labeler.label_batch(moved / "prompts.json", targets=moved / "targets", output=moved / "local1",
                                  checkpoint=test_checkpoint, image_size=SIZE, formats=FORMATS, cache=False,
                                  progress=False, executor="ray", workers=2)
    assert (summary.labeled, summary.skipped, summary.failed) == (0, 7, 1)  # broken.jpg is tried again
    # The same bytes; broken.jpg's error names the file where it now is.
    assert files_of(moved / "local1") == {k: v.replace(str(root).encode(), str(moved).encode())
                                        for k, v in local[1].items()}


def test_without_ray_or_with_a_chain_the_command_stops_with_exit_2(tmp_path, test_checkpoint):
    no_ray = tmp_path / "no_ray"
    no_ray.mkdir()
    (no_ray / "ray.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    common = ["--prompts", ROOT / "assets/demo/prompts.json", "--targets", ROOT / "assets/demo/targets",
              "--checkpoint", test_checkpoint, "--image-size", SIZE, "--executor", "ray"]
    env = {**os.environ, "PYTHONPATH": f"{no_ray}{os.pathsep}{ROOT}"}
    missing = subprocess.run([sys.executable, str(ROOT / "main.py"), "--headless", *map(str, common), "--output",
                              str(tmp_path / "a")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and 'pip install -e ".[ray]"' in missing.stderr, missing.stderr
    chain = run_main(*common, "--memory", "chain", "--output", tmp_path / "b")
    assert chain.returncode == 2 and "--memory chain" in chain.stderr and "--executor local" in chain.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
