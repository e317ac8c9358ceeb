"""RunSettings and `--precision`: the resolved precision is recorded in the manifest's settings, counts in
the fingerprint only when it is bf16 (fp32 runs keep the fingerprint they had before the option), and
travels to the Ray workers in the resolved settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import save_jpeg, synthetic_image

from labeler.batch.pipeline import label_batch
from labeler.batch.settings import RunSettings
from labeler.errors import UsageError
from labeler.models.backend import ModelSettings
from labeler.outputs.folder import fingerprint
from labeler.prompts.prompt_set import ObjectGuides, PromptSet, ReferenceGuides
from labeler.utils.hashing import content_hash


def _prompts(root: Path) -> PromptSet:
    ref = save_jpeg(synthetic_image(1), root / "refs" / "r.jpg")
    return PromptSet([ReferenceGuides(ref, 320, 240, [ObjectGuides(1, box=(40, 30, 200, 180))])])


def _run(precision: str) -> RunSettings:
    return RunSettings(ModelSettings("tiny", checkpoint="none")).resolved(128, "cpu", None, precision)


def test_fp32_keeps_the_fingerprint_from_before_precision_and_bf16_changes_it(tmp_path):
    from labeler.prompts.prompt_set import prompts_to_dict

    prompts = _prompts(tmp_path)
    guides = prompts_to_dict(prompts, base_dir=Path("/"))
    guides["references"][0]["image"] = content_hash(prompts.references[0].image)
    # The parts the fingerprint had before --precision, hashed by the same function.
    before = fingerprint(prompts=guides, model="tiny", checkpoint="untrained", image_size=128, device="cpu",
                         memory="refs", threshold=0.0)
    assert _run("fp32").fingerprint(prompts) == before
    assert _run("bf16").fingerprint(prompts) == fingerprint(
        prompts=guides, model="tiny", checkpoint="untrained", image_size=128, device="cpu", memory="refs",
        threshold=0.0, precision="bf16")
    assert _run("bf16").fingerprint(prompts) != before


def test_the_manifest_records_the_resolved_precision(tmp_path):
    for precision in ("fp32", "bf16"):
        assert _run(precision).manifest_settings(tmp_path, tmp_path, [])["precision"] == precision
    assert _run("bf16").model.precision == "bf16"  # what a Ray worker's LabelerSpec builds its backend from


def test_an_unknown_precision_is_a_usage_error_before_any_work(tmp_path):
    with pytest.raises(UsageError, match="precision 'fp16': choose auto, bf16 or fp32"):
        RunSettings(ModelSettings(precision="fp16"))
    with pytest.raises(UsageError, match="precision 'half'"):
        label_batch(_prompts(tmp_path), tmp_path / "refs", tmp_path / "out", checkpoint="none", precision="half")
    assert not (tmp_path / "out").exists()


def test_a_bf16_batch_is_recorded_resumed_and_relabeled_in_fp32(test_checkpoint, tmp_path):
    """End to end on SAM 2 (64 px: bf16 is emulated on most CPUs): the manifest says bf16, a bf16 rerun
    skips every target, an fp32 run relabels them."""
    prompts = _prompts(tmp_path)
    targets = tmp_path / "targets"
    for seed in (2, 3):
        save_jpeg(synthetic_image(seed), targets / f"t{seed}.jpg")
    run = dict(checkpoint=test_checkpoint, image_size=64, device="cpu", progress=False, cache=False)
    out = tmp_path / "out"
    first = label_batch(prompts, targets, out, precision="bf16", **run)
    assert first.labeled == 2
    assert json.loads((out / "manifest.json").read_text())["settings"]["precision"] == "bf16"
    again = label_batch(prompts, targets, out, precision="bf16", **run)
    assert (again.labeled, again.skipped) == (0, 2)
    fp32 = label_batch(prompts, targets, out, precision="fp32", **run)
    assert (fp32.labeled, fp32.skipped) == (2, 0)
    assert json.loads((out / "manifest.json").read_text())["settings"]["precision"] == "fp32"


def test_a_ray_workers_spec_builds_its_backend_at_the_resolved_precision(test_checkpoint, tmp_path):
    pytest.importorskip("ray")
    from labeler.batch.ray_executor import LabelerSpec
    from labeler.models.sam2.backend import Sam2Backend

    run = RunSettings(ModelSettings("tiny", checkpoint=test_checkpoint, image_size=64, device="cpu",
                                    precision="auto"), cache=False).resolved(64, "cpu", test_checkpoint, "bf16")
    labeler, _ = LabelerSpec(_prompts(tmp_path), run, Sam2Backend)()
    assert labeler.backend.precision == "bf16"
