"""The model-backend interface is complete: a backend that is not SAM 2 (tests/standin_backend.py) runs the
whole labeler — the batch on both executors, a feature-cache hit, a review with a correction and teaching,
and the selector's preview — in a process where importing `sam2` fails."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT

SCRIPT = r"""
import importlib.abc, json, shutil, sys
from pathlib import Path


class NoSam2(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "sam2" or name.startswith("sam2."):
            raise ImportError("sam2 is made unimportable for this test")


sys.meta_path.insert(0, NoSam2())
sys.path.insert(0, "tests")
import numpy as np
import ray

import standin_backend
from helpers import files_of, make_inputs, save_jpeg, synthetic_image
from labeler import PromptSet, label_batch
from labeler.models.backend import ModelSettings, build_backend
from labeler.review.session import Review
from standin_backend import StandInBackend

standin_backend.register()
root = Path(sys.argv[1])
prompts_file, targets = make_inputs(root)
run = dict(model="standin", checkpoint="none", progress=False, cache=root / "cache", formats=("coco",))
out = {}
local = label_batch(prompts_file, targets, root / "local", **run)
out["local"] = [local.labeled, local.failed]
out["encoded_first"] = StandInBackend.forwards

StandInBackend.forwards = 0
again = label_batch(prompts_file, targets, root / "again", **run)
out["encoded_again"] = StandInBackend.forwards
out["again_same"] = files_of(root / "again") == files_of(root / "local")

ray.init(num_cpus=2, include_dashboard=False)
ray.cloudpickle.register_pickle_by_value(standin_backend)  # workers don't import tests/
on_ray = label_batch(prompts_file, targets, root / "ray", **run, executor="ray", workers=2, batch_size=2)
out["ray"] = [on_ray.labeled, on_ray.failed]
local_files, ray_files = files_of(root / "local"), files_of(root / "ray")
out["ray_same"] = sorted(k for k in local_files if local_files[k] != ray_files.get(k))

# The same outcome, the same summary and manifest, whichever executor: a rerun over more targets, with
# targets labeled before (skipped), one reviewed (kept), new ones and an unreadable one (failed).
more = root / "more"
shutil.copytree(targets, more)
for seed in (40, 41):
    save_jpeg(synthetic_image(seed), more / f"new{seed}.jpg")
summaries = {}
for executor in ("local", "ray"):
    folder = root / f"resume_{executor}"
    shutil.copytree(root / "local", folder)
    with Review.open(folder, more) as review:
        review.accept("t20.jpg")
    s = label_batch(prompts_file, more, folder, **run, executor=executor, batch_size=2)
    summaries[executor] = [s.targets, s.labeled, s.skipped, s.failed, s.reviewed, sorted(s.present.items())]
out["resume"] = summaries
resumed_local, resumed_ray = files_of(root / "resume_local"), files_of(root / "resume_ray")
out["resume_same"] = sorted(k for k in resumed_local if resumed_local[k] != resumed_ray.get(k))


def manifest(folder):  # the review of t20 was made at another second in each copy
    data = json.loads((folder / "manifest.json").read_text())
    data["targets"]["t20.jpg"]["review"].pop("time")
    return data


out["resume_manifests_same"] = manifest(root / "resume_local") == manifest(root / "resume_ray")
ray.shutdown()

with Review.open(root / "local") as review:
    names = [r.name for r in review.order() if r.status == "labeled"]
    first, second = names[0], names[1]
    height, width = review.detections(review.record(first))[0].mask.shape
    fixed = np.zeros((height, width), bool)
    fixed[: height // 2, : width // 2] = True
    review.correct(first, {1: fixed})
    review.teach(first)
    review.accept(second)
    taught = review.finish()
out["taught_references"] = len(taught.references)
relabel = label_batch(taught, targets, root / "local", **run)
out["relabel"] = [relabel.labeled, relabel.reviewed]
with Review.open(root / "local") as review:
    out["correction_kept"] = bool((review.detections(review.record(first))[0].mask == fixed).all())

backend = build_backend(ModelSettings("standin"))
rgb = np.zeros((40, 60, 3), np.uint8)
from labeler.types.guides import ObjectGuides
preview = backend.preview(rgb).mask(ObjectGuides(1, box=(10, 5, 30, 25)))
out["preview_pixels"] = int(preview.sum())
out["sam2_imported"] = any(m == "sam2" or m.startswith("sam2.") for m in sys.modules)
print("RESULT", json.dumps(out))
"""


def test_a_backend_that_is_not_sam2_runs_the_whole_labeler_without_sam2(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    line = next((x for x in result.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, result.stdout[-3000:] + result.stderr[-5000:]
    out = json.loads(line.removeprefix("RESULT "))
    assert out["local"] == [7, 1]  # seven readable targets, broken.jpg failed
    assert out["encoded_first"] == 7
    assert out["encoded_again"] == 0 and out["again_same"]  # every target's features read from the cache
    assert out["ray"] == [7, 1] and out["ray_same"] == []  # Ray workers build the same backend: the same bytes
    # 10 targets: 2 new labeled, 6 kept (5 labeled before, t20 reviewed), broken.jpg failed again
    assert out["resume"]["local"] == out["resume"]["ray"] and out["resume"]["local"][1:5] == [2, 7, 1, 1]
    assert out["resume_same"] in ([], ["manifest.json"]) and out["resume_manifests_same"]
    assert out["taught_references"] == 3
    assert out["relabel"] == [5, 2]  # new prompts: every unreviewed target again; the reviewed two kept
    assert out["correction_kept"]
    assert out["preview_pixels"] == 20 * 20
    assert out["sam2_imported"] is False
