"""The review window on the Agg backend, driven by matplotlib events as a person at the window would."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from agg_driver import Driver, ScriptedHost  # noqa: E402
from helpers import ROOT, as_backend  # noqa: E402
from PIL import Image  # noqa: E402

from labeler.gui.review_window import ReviewWindow  # noqa: E402
from labeler.models.sam2.tracker import ReferencePreview  # noqa: E402
from labeler.review.session import Review  # noqa: E402
from labeler.types.guides import ObjectGuides  # noqa: E402
from labeler.utils.images import read_rgb  # noqa: E402


@pytest.fixture
def window(out, predictor):
    with Review.open(out) as review:
        fig = plt.figure(figsize=(10, 6))
        w = ReviewWindow(fig, review, as_backend(predictor))
        yield w
        plt.close(fig)


def state_of(out, name: str) -> str | None:
    entry = json.loads((out / "manifest.json").read_text())["targets"][name]
    return entry.get("review", {}).get("state") if entry.get("review") else None


def id_mask(out, stem: str, obj_id: int) -> np.ndarray:
    path = out / "id_masks" / f"{stem}_id{obj_id}.png"
    return np.asarray(Image.open(path)) == 255 if path.exists() else None


def test_keys_accept_exclude_and_move_worst_first(window, out):
    d = Driver(window)
    first, second, third = window.names[:3]
    assert window.fig.canvas.manager.get_window_title() == window.title_text.get_text()  # the host's window names it
    assert window.title_text.get_text().startswith(f"Review — {first} (1/6) · reviewed 0/6")
    d.key("enter")
    assert state_of(out, first) == "accepted" and window.record.name == second
    d.key("x")
    assert state_of(out, second) == "excluded" and window.record.name == third
    d.key("left")
    assert window.record.name == second and "[excluded]" in window.title_text.get_text()
    d.key("right")
    d.key("a")
    assert state_of(out, third) == "accepted"
    assert "reviewed 3/6 · 0 corrected · 0 taught" in window.title_text.get_text()
    d.click(100, 100)  # outside fix mode the mouse changes nothing
    assert window.state.ids() == []


def test_fix_with_brush_paint_and_erase(window, out):
    d = Driver(window)
    name, stem = window.record.name, window.record.path.stem
    before = window.predicted[1].mask.copy()
    d.key("f")
    d.key("1")
    d.key("b")
    window.state.brush_radius = 10
    d.drag([(30, 30), (60, 30)])                 # paint
    d.drag([(150, 120), (180, 120)], button=3)   # erase
    shown = window.shown_mask(1)
    painted = window.state.object(1).paint
    erased = window.state.object(1).erase
    np.testing.assert_array_equal(shown, (before | painted) & ~erased)
    d.key("enter")
    assert state_of(out, name) == "corrected"
    np.testing.assert_array_equal(id_mask(out, stem, 1), shown)


def test_fix_with_a_new_box_reprompts_sam2_on_the_target(window, out, predictor):
    d = Driver(window)
    name, stem = window.record.name, window.record.path.stem
    d.key("f")
    d.key("2")
    d.drag([(40, 30), (120, 100), (200, 180)])
    expected = ReferencePreview(as_backend(predictor), read_rgb(window.record.path)).mask(ObjectGuides(2, box=(40, 30, 200, 180)))
    np.testing.assert_array_equal(window.shown_mask(2), expected)  # the live preview is what is saved
    d.key("enter")
    np.testing.assert_array_equal(id_mask(out, stem, 2), expected)
    assert state_of(out, name) == "corrected"


def test_undo_and_dropping_a_fix(window, out):
    d = Driver(window)
    name, stem = window.record.name, window.record.path.stem
    before = id_mask(out, stem, 1)
    d.key("f")
    d.key("b")
    d.drag([(30, 30), (90, 30)])
    assert window.state.object(1) is not None
    d.key("u")
    assert window.state.object(1) is None
    d.key("q")  # Q does not end the review in fix mode
    assert not window.ended and window.fixing
    d.key("escape")
    assert state_of(out, name) is None and not window.fixing
    np.testing.assert_array_equal(id_mask(out, stem, 1), before)


def test_erase_a_false_positive_and_teach_it_as_absent(window, out):
    d = Driver(window)
    name = window.record.name
    d.key("t")  # pending until the target is accepted or corrected
    d.key("f")
    d.key("1")
    d.key("b")
    window.state.brush_radius = 200
    d.drag([(160, 120), (161, 120)], button=3)  # erase ID 1 completely
    assert not window.shown_mask(1).any()
    d.key("enter")
    assert state_of(out, name) == "corrected"
    assert "1 taught" in window.title_text.get_text()
    d.key("q")
    assert window.ended
    prompts = window.review.finish()
    ref = prompts.references[-1]
    assert ref.image.name == name and ref.object(1).absent


def test_zoom_keeps_guides_in_image_pixels(window):
    d = Driver(window)
    d.key("f")
    d.key("+", at=(160, 120))
    (x0, x1) = window.ax.get_xlim()
    assert x1 - x0 < 200  # zoomed in
    d.key("2")
    d.drag([(140, 100), (150, 110), (170, 130)])
    assert window.state.object(2).box == pytest.approx((140, 100, 170, 130), abs=0.6)
    d.key("0")
    assert window.ax.get_xlim()[1] - window.ax.get_xlim()[0] >= 319


def test_the_review_command_runs_in_a_host_until_the_review_ends(out, test_checkpoint):
    """`review_command` shows its window in the host it is given; Q ends the review, and the host closes it."""
    from labeler.gui.review_window import review_command

    def person(window):
        d = Driver(window)
        d.key("enter")
        d.key("q")

    host = ScriptedHost(person)
    assert review_command(["--output", str(out), "--checkpoint", str(test_checkpoint)], {}, host=host) == 0
    (window,) = host.windows
    assert window.done and window.ended and host.closed == [window]
    assert state_of(out, window.names[0]) == "accepted"


def test_review_clear_from_the_command_line(out):
    with Review.open(out) as review:
        for r in review.order()[:2]:
            review.accept(r.name)
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "review", "--output", str(out), "--clear"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "dropped 2 review(s)" in result.stderr
    assert all("review" not in e for e in json.loads((out / "manifest.json").read_text())["targets"].values())



def test_the_real_window_under_xvfb_reviews_fixes_teaches_and_relabels(labeled_folder, tmp_path):
    """`python main.py review` in a real TkAgg window on Xvfb, with xdotool as the person: accept, exclude,
    fix with a brush stroke, teach, end; the taught reference then relabels the unreviewed targets."""
    import os
    import shutil
    from pathlib import Path

    from xdisplay import WINDOW, Screen, _require_a_display, xvfb

    _require_a_display()
    shutil.copytree(labeled_folder.parent / "targets", tmp_path / "targets")
    out = tmp_path / "out"
    shutil.copytree(labeled_folder, out)
    with Review.open(out) as review:
        order = [r.name for r in review.order()]
    log_path = tmp_path / "review.log"
    with xvfb(tmp_path) as display, open(log_path, "wb") as log:
        program = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "review", "--output", str(out)], cwd=ROOT,
                                   env={**os.environ, "DISPLAY": display, "MPLBACKEND": "TkAgg"},
                                   stdout=log, stderr=subprocess.STDOUT)
        screen = Screen(display, program, log_path)
        try:
            def wait_title(pattern: str) -> str:
                window = screen.wait_for_window(pattern, timeout=60)
                screen.xdotool("windowsize", "--sync", window, *WINDOW)
                screen.settled()
                return window

            window = wait_title(rf"^Review .*{order[0]} \(1/6\)")
            Image.fromarray(screen.settled()[:WINDOW[1], :WINDOW[0]]).save(tmp_path / "review_opened.png")
            screen.key(window, "Return")                         # accept the worst target
            window = wait_title(rf"^Review .*{order[1]} ")
            screen.key(window, "x")                              # exclude the next
            window = wait_title(rf"^Review .*{order[2]} ")
            screen.key(window, "t")                              # teach it, once fixed
            screen.key(window, "f")
            screen.key(window, "b")
            stem = Path(order[2]).stem
            predicted = np.asarray(Image.open(out / "id_masks" / f"{stem}_id1.png")) == 255
            left, top = 60, 120
            screen.drag(window, [(left + 10 * k, top) for k in range(12)])  # a brush stroke on the image
            shot = screen.settled()[:WINDOW[1], :WINDOW[0]]
            Image.fromarray(shot).save(tmp_path / "review_fixing.png")
            # What the partial repaints put on the screen is what a full redraw draws (a resize forces one).
            screen.xdotool("windowsize", "--sync", window, WINDOW[0] + 40, WINDOW[1])
            screen.settled()
            screen.xdotool("windowsize", "--sync", window, *WINDOW)
            full = screen.settled()[:WINDOW[1], :WINDOW[0]]
            image_area = (slice(35, 540), slice(60, 740))
            assert (np.abs(full[image_area].astype(int) - shot[image_area]).max(axis=-1) > 3).mean() < 0.001
            screen.key(window, "Return")                         # save the fix
            window = wait_title(rf"^Review .*{order[3]} .*reviewed 3/6 .*1 corrected .*1 taught")
            screen.key(window, "q")                              # end: teach, relabel the rest
            code = program.wait(timeout=120)
        finally:
            if program.poll() is None:
                program.kill()
                program.wait()
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    targets = json.loads((out / "manifest.json").read_text())["targets"]
    assert [targets[n].get("review", {}).get("state") for n in order[:3]] == ["accepted", "excluded", "corrected"]
    assert "taught 1 reference(s)" in output and "6 targets: 3 labeled, 3 already labeled" in output
    fixed = np.asarray(Image.open(out / "id_masks" / f"{stem}_id1.png")) == 255
    ys, xs = np.nonzero(fixed & ~predicted)  # the stroke, in image pixels: a band across the top left
    assert len(xs) > 100 and xs.max() < 80 and 20 < ys.min() and ys.max() < 60
    assert json.loads((out / "prompts.json").read_text())["references"][-1]["image"].endswith(order[2])


def test_an_audit_shows_its_sample_in_order_counts_it_in_the_title_and_resumes(out, test_checkpoint):
    """`review --audit 3`: the sample's random order, `audit k/3` in the title, a reopened window starts at the
    first target not reviewed yet, as `review --audit` does; the teach hint is in the title. The windows made
    here have no model: accepting needs no preview."""
    from types import SimpleNamespace

    no_model = SimpleNamespace(preview=lambda rgb: None)
    with Review.open(out) as review:
        sample = [r.name for r in review.audit(3, seed=4)]
        fig = plt.figure(figsize=(10, 6))
        try:
            w = ReviewWindow(fig, review, no_model, audit=review.audit(3), teach_hint="target02.jpg")
            assert w.names == sample
            assert w.title_text.get_text().startswith(f"Review — {sample[0]} (audit 1/3) · reviewed 0/6")
            assert "teach? target02.jpg" in w.title_text.get_text()
            Driver(w).key("enter")
            assert state_of(out, sample[0]) == "accepted" and "(audit 2/3)" in w.title_text.get_text()
            w.end()
            again = ReviewWindow(fig, review, no_model, audit=review.audit(3))
            assert again.record.name == sample[1] and "(audit 2/3)" in again.title_text.get_text()
        finally:
            plt.close(fig)
    # `python main.py review --audit 3` resumes it where it stopped.
    from labeler.gui.review_window import review_command

    seen = []

    def person(window):
        seen.append(window.title_text.get_text())
        Driver(window).key("enter")
        Driver(window).key("q")

    assert review_command(["--output", str(out), "--audit", "3", "--checkpoint", str(test_checkpoint)], {},
                          host=ScriptedHost(person)) == 0
    assert seen[0].startswith(f"Review — {sample[1]} (audit 2/3)") and state_of(out, sample[1]) == "accepted"
