"""`python main.py` end to end in a real window: Xvfb, TkAgg, and xdotool as the person at the mouse.

The test starts an Xvfb display, runs the interactive program on the bundled demo with untrained
weights, and draws on each reference (a box and a positive and a negative point for ID 1, then `2`,
`b` and a brush stroke for ID 2, then Enter). It checks the window (title, the reference image
filling its left part), the saved prompts.json and the labeled outputs.

Needs Xvfb and xdotool (`apt-get install -y xvfb xdotool`); without them the test skips, saying
so, except in CI (CI set), where it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, check_outputs
from PIL import Image
from xdisplay import (
    BOX,
    BRUSH_RADIUS,
    NEGATIVE,
    POSITIVE,
    REFS,
    STROKE,
    TARGETS,
    WINDOW,
    Layout,
    Screen,
    _require_a_display,
    check_image_fills_left_part,
    xvfb,
)

from labeler.prompts.prompt_set import load_prompts


def guide(screen: Screen, window: str, layout: Layout) -> None:
    """A box, a positive and a negative point for ID 1; `2`, the brush and a stroke for ID 2."""
    to = layout.screen
    screen.drag(window, [to(*BOX[:2]), to((BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2), to(*BOX[2:])])
    screen.click(window, to(*POSITIVE), button=1)
    screen.click(window, to(*NEGATIVE), button=3)
    screen.key(window, "2")
    screen.key(window, "b")
    screen.drag(window, [to(*p) for p in STROKE])


def open_reference(screen: Screen, name: str, index: int, count: int, tmp_path: Path):
    """Wait for the reference's window, check its title, resize it; returns window id and layout."""
    # The first window waits for SAM 2 to be built (seconds on CPU).
    window = screen.wait_for_window(rf"^SmartSelector .*\({index}/{count}\)$", timeout=60 if index == 1 else 20)
    title = screen.xdotool("getwindowname", window)
    assert title.startswith("SmartSelector") and f"{name} ({index}/{count})" in title, title
    screen.xdotool("windowsize", "--sync", window, *WINDOW)
    screen.xdotool("windowmove", "--sync", window, 0, 0)
    reference = np.asarray(Image.open(REFS / name).convert("RGB"))
    h, w = reference.shape[:2]
    deadline = time.monotonic() + 15
    while True:  # until matplotlib has redrawn the figure at the window's new size
        shot = screen.settled()
        layout = Layout(shot, (w, h))
        try:
            check_image_fills_left_part(shot, layout, reference)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                Image.fromarray(shot).save(tmp_path / f"window{index}_unsettled.png")
                raise
    Image.fromarray(shot[:WINDOW[1], :WINDOW[0]]).save(tmp_path / f"window{index}_opened.png")
    return window, layout


def test_guiding_references_in_the_window_then_labeling(tmp_path):
    _require_a_display()
    references = sorted(p.name for p in REFS.iterdir())
    assert len(references) == 2
    out = tmp_path / "out"
    program_log = tmp_path / "main.log"
    start = time.monotonic()

    def step(what: str) -> None:  # timings, shown with the output of a failure (or with -s)
        print(f"{time.monotonic() - start:5.1f} s  {what}")

    with xvfb(tmp_path) as display, open(program_log, "wb") as log:
        program = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "--refs", str(REFS), "--targets", str(TARGETS),
             "--output", str(out), "--checkpoint", "none", "--image-size", "256", "--quiet"],
            cwd=ROOT, env={**os.environ, "DISPLAY": display, "MPLBACKEND": "TkAgg"},
            stdout=log, stderr=subprocess.STDOUT,
        )
        screen = Screen(display, program, program_log)
        try:
            for index, name in enumerate(references, 1):
                step(f"waiting for the window of {name}")
                window, layout = open_reference(screen, name, index, len(references), tmp_path)
                step("window open, drawing")
                guide(screen, window, layout)
                shot = screen.settled()[:WINDOW[1], :WINDOW[0]]
                Image.fromarray(shot).save(tmp_path / f"window{index}_guided.png")
                check_image_fills_left_part(shot, layout)
                step("guides drawn, Enter")
                screen.key(window, "Return")
                # Each accepted reference is saved at once.
                deadline = time.monotonic() + 15
                saved = out / "prompts.json"
                while not saved.is_file() or len(load_prompts(saved).references) < index:
                    assert time.monotonic() < deadline, f"prompts.json not saved after Enter:\n{screen.program_output()}"
                    assert program.poll() is None, f"main.py exited early:\n{screen.program_output()}"
                    time.sleep(0.2)
            step("labeling the targets")
            try:
                code = program.wait(timeout=90)
            except subprocess.TimeoutExpired:
                pytest.fail(f"main.py did not finish labeling within 90 s:\n{screen.program_output()}")
        finally:
            if program.poll() is None:
                program.kill()
                program.wait()
    step("done")
    assert code == 0, screen.program_output()

    prompts = load_prompts(out / "prompts.json")
    assert [r.image for r in prompts.references] == [(REFS / n).resolve() for n in references]
    yy, xx = np.mgrid[0:240, 0:320]
    for ref in prompts.references:
        assert (ref.width, ref.height) == (320, 240)
        assert [o.id for o in ref.objects] == [1, 2], ref.image
        first, second = ref.object(1), ref.object(2)
        np.testing.assert_allclose(first.box, BOX, atol=2)
        np.testing.assert_allclose(first.points, [POSITIVE, NEGATIVE], atol=2)
        assert first.labels == [1, 0]
        assert first.paint is None and first.erase is None
        assert second.box is None and not second.points and second.erase is None
        near_stroke = np.zeros((240, 320), dtype=bool)
        for x, y in STROKE:
            near_stroke |= (xx - x) ** 2 + (yy - y) ** 2 <= (BRUSH_RADIUS + 3) ** 2
        assert second.paint is not None and second.paint.sum() > 1000
        assert not second.paint[~near_stroke].any(), "paint outside the stroke"
        for x, y in STROKE:
            assert second.paint[y, x]

    check_outputs(out, sorted(TARGETS.iterdir()), [1, 2])
    assert "6 targets: 6 labeled, 0 already labeled, 0 failed" in screen.program_output()
