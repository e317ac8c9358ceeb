"""The library API: `labeler.Labeler`, `labeler.label_batch`, prompts built in code, the output-folder lock."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import IMAGE_SIZE, ROOT, files_of, run_main, save_jpeg, synthetic_image
from PIL import Image

import labeler
from labeler.utils.images import read_rgb

DEMO = ROOT / "assets" / "demo"
DEMO_TARGETS = sorted((DEMO / "targets").iterdir())


@pytest.fixture(scope="module")
def lab(test_checkpoint):
    return labeler.Labeler.from_pretrained(DEMO / "prompts.json", checkpoint=test_checkpoint, image_size=IMAGE_SIZE,
                                           device="cpu")


def same(a: labeler.LabelResult, b: labeler.LabelResult) -> None:
    assert a.size == b.size and [d.id for d in a.detections] == [d.id for d in b.detections]
    for x, y in zip(a.detections, b.detections):
        assert (x.id, x.class_name, x.present, x.bbox) == (y.id, y.class_name, y.present, y.bbox)
        assert x.logit == pytest.approx(y.logit, abs=1e-4)
        np.testing.assert_array_equal(x.mask, y.mask)


def test_a_path_a_pil_image_and_an_array_give_the_same_detections(lab):
    path = DEMO_TARGETS[0]
    by_path = lab.label(path)
    assert by_path.source == path and by_path.error is None
    assert [d.id for d in by_path.detections] == [1, 2] and by_path.detections[1].class_name == "square"
    same(by_path, lab.label(Image.open(path)))
    same(by_path, lab.label(read_rgb(path)))
    d = by_path.detections[0]
    assert d.mask.shape == by_path.size == read_rgb(path).shape[:2] and d.mask.dtype == bool
    assert d.score == pytest.approx(1 / (1 + np.exp(-d.logit)))


def test_a_pil_image_is_taken_upright(lab, tmp_path):
    rgb = synthetic_image(5, size=(160, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: upright it is 120 wide, 160 high
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "r.jpg") as img:
        result = lab.label(img)
    assert result.size == (160, 120)
    same(result, lab.label(tmp_path / "r.jpg"))


def test_label_many_in_batches_equals_one_at_a_time_and_goes_on_past_a_bad_image(lab, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    inputs = [*DEMO_TARGETS[:2], broken, *DEMO_TARGETS[2:]]
    results = list(lab.label_many(inputs, batch_size=3))
    assert [r.source for r in results] == inputs
    assert results[2].error is not None and "cannot read image" in results[2].error and not results[2].detections
    for path, result in zip(inputs, results):
        if path != broken:
            same(result, lab.label(path))
    with pytest.raises(labeler.ImageReadError):
        lab.label(broken)


def test_label_map_equals_the_batch_label_file(lab, test_checkpoint, tmp_path):
    out = tmp_path / "out"
    summary = labeler.label_batch(DEMO / "prompts.json", targets=DEMO / "targets", output=out,
                                  checkpoint=test_checkpoint, image_size=IMAGE_SIZE, progress=False)
    assert (summary.labeled, summary.failed, summary.exit_code) == (6, 0, 0)
    for path in DEMO_TARGETS:
        np.testing.assert_array_equal(lab.label(path).label_map(), np.asarray(Image.open(out / "labels" / f"{path.stem}.png")))
    assert torch.is_grad_enabled()  # the batch turns autograd off in its own scopes, not for the process


def test_chain_mode_labels_one_chain_per_call(test_checkpoint):
    chain = labeler.Labeler.from_pretrained(DEMO / "prompts.json", checkpoint=test_checkpoint, image_size=IMAGE_SIZE,
                                            device="cpu", memory="chain")
    first = [r.detections for r in chain.label_many(DEMO_TARGETS[:3])]
    again = [r.detections for r in chain.label_many(DEMO_TARGETS[:3])]  # a new chain, not frames 4-6
    for a, b in zip(first, again):
        assert [d.logit for d in a] == pytest.approx([d.logit for d in b], abs=1e-5)


def test_label_batch_and_the_command_line_write_byte_identical_folders(golden_run, test_checkpoint):
    root, cli_out, result = golden_run  # `python main.py --headless` on the golden inputs
    assert result.returncode == 1, result.stderr
    api_out = root / "api"
    summary = labeler.label_batch(labeler.PromptSet.load(root / "prompts.json"), targets=root / "targets",
                                  output=api_out, checkpoint=test_checkpoint, image_size=IMAGE_SIZE,
                                  formats=("coco", "yolo"), precision="fp32", progress=False)
    assert (summary.labeled, summary.failed, summary.exit_code) == (7, 1, 1)
    api_files = files_of(api_out)
    assert "manifest.json" in api_files and "coco.json" in api_files
    assert api_files == files_of(cli_out)


def test_bad_input_raises_usage_error_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(labeler.UsageError, match="no prompts file"):
        labeler.label_batch(tmp_path / "missing.json", targets=DEMO / "targets", output=out, checkpoint="none")
    with pytest.raises(labeler.UsageError, match="does not exist"):
        labeler.label_batch(DEMO / "prompts.json", targets=tmp_path / "nowhere", output=out, checkpoint="none")
    with pytest.raises(labeler.UsageError, match="multiple of 32"):
        labeler.label_batch(DEMO / "prompts.json", targets=DEMO / "targets", output=out, checkpoint="none",
                            image_size=100)
    with pytest.raises(labeler.UsageError, match="python main.py download --model small"):
        labeler.Labeler.from_pretrained(DEMO / "prompts.json", model="small")  # never downloads
    assert not out.exists()


def test_prompts_built_in_code_round_trip(tmp_path):
    ref_path = save_jpeg(synthetic_image(4), tmp_path / "refs" / "a.jpg")
    paint = np.zeros((240, 320), dtype=bool)
    paint[50:90, 60:120] = True
    ref = labeler.ReferenceGuides.from_image(ref_path, objects=[
        labeler.ObjectGuides(id=1, box=[10, 20, 150, 200]),
        labeler.ObjectGuides(id=2, points=[[200, 100]], labels=[1], paint=paint),
    ])
    assert (ref.width, ref.height) == (320, 240)
    prompts = labeler.PromptSet(references=[ref], classes={1: "scratch"})
    prompts.save(tmp_path / "prompts.json")
    assert '"image": "refs/a.jpg"' in (tmp_path / "prompts.json").read_text()  # relative, as the CLI writes
    assert labeler.PromptSet.load(tmp_path / "prompts.json") == prompts


HOLD_LOCK = (
    "import sys, time; from labeler.outputs.folder import OutputFolder\n"
    "with OutputFolder(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(600)\n"
)


def test_one_writer_per_output_folder_and_a_dead_holder_is_taken_over(test_checkpoint, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_main("--prompts", DEMO / "prompts.json", "--targets", DEMO / "targets", "--output", out,
                          "--checkpoint", test_checkpoint, "--image-size", IMAGE_SIZE)
        assert result.returncode == 2
        message = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(message) == 1 and f"in use by process {holder.pid}" in message[0], result.stderr
        assert not (out / "results.csv").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".labeler.lock").exists()  # left behind by the killed holder
    summary = labeler.label_batch(DEMO / "prompts.json", targets=DEMO / "targets", output=out,
                                  checkpoint=test_checkpoint, image_size=IMAGE_SIZE, progress=False)
    assert summary.labeled == 6 and not (out / ".labeler.lock").exists()


def test_stop_event_ends_the_batch_after_the_current_target_and_the_same_call_resumes(test_checkpoint, tmp_path):
    import threading

    stop = threading.Event()
    stop.set()
    kwargs = dict(targets=DEMO / "targets", output=tmp_path / "out", checkpoint=test_checkpoint,
                  image_size=IMAGE_SIZE, progress=False)
    first = labeler.label_batch(DEMO / "prompts.json", stop=stop, **kwargs)
    assert first.interrupted and first.labeled == 0
    assert not (tmp_path / "out" / "report.png").exists()  # no exports or sheet after an interrupted batch
    second = labeler.label_batch(DEMO / "prompts.json", **kwargs)
    assert not second.interrupted and second.labeled == 6 and (tmp_path / "out" / "report.png").exists()

