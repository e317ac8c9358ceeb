"""`python main.py` end to end in a real window: Xvfb, TkAgg, and xdotool as the person at the mouse.

The test starts an Xvfb display, runs the interactive program on the bundled demo with untrained
weights, and draws on each reference (a box and a positive and a negative point for ID 1, then `2`,
`b` and a brush stroke for ID 2, then Enter). It checks the window (title, the reference image
filling its left part), the saved prompts.json and the labeled outputs.

Needs Xvfb and xdotool (`apt-get install -y xvfb xdotool`); without them the test skips, saying
so, except in CI (CI set), where it fails.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeler.prompts.prompt_set import load_prompts
from test_cli import check_outputs

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT / "assets" / "demo" / "refs"
TARGETS = ROOT / "assets" / "demo" / "targets"
SCREEN = (1280, 800)
WINDOW = (1000, 640)  # the window is resized to this, so image pixels land at known screen pixels
AXES = (0.005, 0.07, 0.79, 0.88)  # the image axes of the SmartSelector, in figure coordinates
BACKGROUND = np.array([0x20, 0x20, 0x20])  # the figure's face colour

# The same guides on both references, in image pixels (on ref1.jpg: ID 1 boxes the disc, ID 2 paints the square).
BOX = (105, 67, 203, 165)
POSITIVE = (154, 116)
NEGATIVE = (40, 200)
STROKE = [(220, 100), (230, 105), (240, 110), (250, 115), (260, 120), (270, 120)]
BRUSH_RADIUS = 12  # the selector's default


def _missing(reason: str) -> None:
    """Skip where no X display can be had; in CI (CI set) that is a failure, never a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(reason)


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        _missing(f"{tool} is not installed (apt-get install -y xvfb xdotool), so no X display can be driven")
    return path


def _require_a_display() -> None:
    """Xvfb, xdotool and tkinter, or skip saying which is missing (fail in CI)."""
    _require("Xvfb")
    _require("xdotool")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        _missing("this python has no tkinter (apt-get install python3-tk), so matplotlib can't open a Tk window")


@contextlib.contextmanager
def xvfb(tmp_path: Path, screen: tuple[int, int] = SCREEN, listen: tuple[str, ...] = ("-nolisten", "tcp"),
         log_name: str = "xvfb.log"):
    """A fresh Xvfb display (a free number picked by Xvfb itself); yields its name, ':N'.
    `listen`: Xvfb's connection options (a local socket by default)."""
    read_end, write_end = os.pipe()
    log = open(tmp_path / log_name, "wb")
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", f"{screen[0]}x{screen[1]}x24", "-dpi", "96", *listen],
        pass_fds=(write_end,), stdout=log, stderr=subprocess.STDOUT,
    )
    os.close(write_end)
    try:
        number = b""
        deadline = time.monotonic() + 15
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_end, 64) if ready else b""
            if not chunk:
                log.flush()
                pytest.fail(f"Xvfb did not start: {(tmp_path / log_name).read_text(errors='replace')}")
            number += chunk
        yield f":{int(number)}"
    finally:
        os.close(read_end)
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


class Screen:
    """The program on an Xvfb display: finds its windows, moves the mouse and types, takes screenshots."""

    def __init__(self, display: str, program: subprocess.Popen, program_log: Path):
        self.display = display
        self.env = {**os.environ, "DISPLAY": display}
        self.program = program
        self.program_log = program_log

    def xdotool(self, *args) -> str:
        result = subprocess.run(["xdotool", *map(str, args)], env=self.env, capture_output=True, text=True,
                                timeout=15)
        assert result.returncode == 0, f"xdotool {' '.join(map(str, args))}: {result.stderr}"
        return result.stdout.strip()

    def program_output(self) -> str:
        return self.program_log.read_text(errors="replace")

    def wait_for_window(self, pattern: str, timeout: float = 30) -> str:
        """The id of the visible window whose title matches `pattern` (a regular expression)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.program.poll() is not None:
                pytest.fail(f"main.py exited ({self.program.returncode}) before a window matching "
                            f"{pattern!r} appeared:\n{self.program_output()}")
            found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", pattern], env=self.env,
                                   capture_output=True, text=True, timeout=15)
            if found.returncode == 0 and found.stdout.split():
                return found.stdout.split()[0]
            time.sleep(0.2)
        pytest.fail(f"no window matching {pattern!r} within {timeout} s:\n{self.program_output()}")

    def grab(self) -> np.ndarray:
        from PIL import ImageGrab

        return np.asarray(ImageGrab.grab(xdisplay=self.display).convert("RGB"))

    def settled(self, timeout: float = 5) -> np.ndarray:
        """A screenshot once the screen stops changing (Tk has drawn every event sent)."""
        time.sleep(0.3)
        shot = self.grab()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)
            again = self.grab()
            if np.array_equal(again, shot):
                break
            shot = again
        return shot

    # Input goes through XTEST, as a real mouse and keyboard would: to the window under the pointer,
    # and keys to the focused window (Xvfb has no window manager to focus it on a click).
    def move(self, window: str, xy) -> None:
        self.xdotool("mousemove", "--window", window, *xy)
        time.sleep(0.05)

    def click(self, window: str, xy, button: int = 1) -> None:
        self.move(window, xy)
        self.xdotool("click", button)
        time.sleep(0.2)

    def drag(self, window: str, path, button: int = 1) -> None:
        self.move(window, path[0])
        self.xdotool("mousedown", button)
        time.sleep(0.1)
        for xy in path[1:]:
            self.move(window, xy)
        time.sleep(0.1)
        self.xdotool("mouseup", button)
        time.sleep(0.2)

    def key(self, window: str, key: str) -> None:
        self.xdotool("windowfocus", "--sync", window)
        self.xdotool("key", key)
        time.sleep(0.2)


class Layout:
    """Where the reference image lands in the window: the SmartSelector's axes rectangle, aspect kept."""

    def __init__(self, shot: np.ndarray, image_size: tuple[int, int], window: tuple[int, int] = WINDOW):
        self.window = window
        width, height = window
        # The figure fills the window above matplotlib's toolbar: the background rows down its left edge.
        is_figure = np.all(shot[:height, 1] == BACKGROUND, axis=-1)
        self.figure_height = int(np.argmin(is_figure)) if not is_figure.all() else height
        fig_w, fig_h = width, self.figure_height
        ax_x, ax_y, ax_w, ax_h = AXES[0] * fig_w, (1 - AXES[1] - AXES[3]) * fig_h, AXES[2] * fig_w, AXES[3] * fig_h
        w, h = image_size
        self.scale = min(ax_w / w, ax_h / h)
        self.left = ax_x + (ax_w - w * self.scale) / 2
        self.top = ax_y + (ax_h - h * self.scale) / 2
        self.image_size = image_size
        self.axes_box = (ax_x, ax_y, ax_x + ax_w, ax_y + ax_h)

    def screen(self, x: float, y: float) -> tuple[int, int]:
        """Window pixel of image point (x, y); imshow puts pixel centres at integers, its edge at -0.5."""
        return round(self.left + (x + 0.5) * self.scale), round(self.top + (y + 0.5) * self.scale)

    @property
    def image_box(self) -> tuple[float, float, float, float]:
        w, h = self.image_size
        return self.left, self.top, self.left + w * self.scale, self.top + h * self.scale


def image_extent(shot: np.ndarray, layout: Layout) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1, max exclusive) of what is not background inside the image axes."""
    # The axes' rows (the window's texts lie just above and below), up to the sidebar.
    x0, y0, x1, y1 = (int(round(v)) for v in layout.axes_box)
    region = shot[y0 - 1:y1 + 1, :x1 + 2].astype(int)
    content = np.abs(region - BACKGROUND).max(axis=-1) > 12
    if not content.any():
        return (0, 0, 0, 0)
    ys, xs = np.nonzero(content)
    return int(xs.min()), int(ys.min()) + y0 - 1, int(xs.max()) + 1, int(ys.max()) + y0 - 1 + 1


def check_image_fills_left_part(shot: np.ndarray, layout: Layout, reference: np.ndarray | None = None) -> None:
    width, _ = layout.window
    expected = layout.image_box
    found = image_extent(shot, layout)
    assert np.allclose(found, expected, atol=2), f"image drawn at {found}, expected {expected}"
    # It fills the left part: the axes' full height, most of the window's width, nothing right of 80 %.
    assert found[3] - found[1] >= 0.87 * layout.figure_height
    assert found[2] - found[0] >= 0.6 * width and found[2] <= 0.8 * width
    if reference is not None:  # and it is the reference image, pixel for pixel (up to resampling)
        x0, y0, x1, y1 = (int(round(v)) for v in expected)
        crop = shot[y0 + 2:y1 - 2, x0 + 2:x1 - 2].astype(float)
        resized = np.asarray(Image.fromarray(reference).resize((x1 - x0, y1 - y0), Image.BILINEAR))
        resized = resized[2:-2, 2:-2].astype(float)
        error = np.abs(crop - resized).mean()  # about 1 grey level; a flipped image is 20 off
        assert error < 5, f"the window does not show the reference image (mean difference {error:.1f})"


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
