"""`use_window_backend` says what is wrong: a DISPLAY where no X server answers, or no window toolkit."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

CALL = """
import sys
{setup}
from labeler.errors import UsageError
from labeler.gui.hosts import use_window_backend
try:
    use_window_backend()
except UsageError as e:
    print(e)
else:
    print("ok")
"""


def _dead_display() -> str:
    """A display number from :987 on where no X server runs (no socket, no lock file)."""
    for n in range(987, 1100):
        if not (Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists()):
            return f":{n}"
    pytest.skip("no free display number")


def _use_window_backend(display: str, setup: str = "") -> str:
    """What `use_window_backend()` says in a fresh python with DISPLAY=display and no MPLBACKEND."""
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = display
    run = subprocess.run(
        [sys.executable, "-c", CALL.format(setup=setup)], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X displays are Linux's")
def test_a_display_where_no_server_answers_is_named():
    pytest.importorskip("tkinter")
    display = _dead_display()
    message = _use_window_backend(display)
    assert f"can't open the display '{display}' (DISPLAY)" in message
    assert "--headless" in message
    assert "install tkinter" not in message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X displays are Linux's")
def test_without_any_toolkit_the_message_says_to_install_one():
    # None in sys.modules makes an import fail and find_spec answer None: no toolkit installed.
    hide = "for m in ('_tkinter', 'tkinter', 'PySide6', 'PyQt6', 'PyQt5', 'PySide2'): sys.modules[m] = None"
    message = _use_window_backend(_dead_display(), setup=hide)
    assert message == "no window toolkit for matplotlib: install tkinter (python3-tk) or PySide6"


@contextlib.contextmanager
def _xvfb():
    """A fresh Xvfb display on a number Xvfb picks itself; yields ':N'."""
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp"],
        pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as f:
            number = f.readline().strip()
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install -y xvfb)")
def test_a_live_display_gets_a_window_backend():
    pytest.importorskip("tkinter")
    with _xvfb() as display:
        assert _use_window_backend(display) == "ok"
