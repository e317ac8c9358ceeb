"""A real X display for the window tests: Xvfb, xdotool as the person at the mouse, screenshots, and what the
tests know of the SmartSelector's layout on it (its reference image, the guides they draw).

Needs Xvfb and xdotool (`apt-get install -y xvfb xdotool`); without them a test skips, saying so, except in
CI (CI set), where it fails.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT
from PIL import Image

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
