"""Window hosts: where the windows are shown. A host owns the matplotlib backend, makes the windows'
figures and runs the event loop until a window is done; the windows (SmartSelector, ReviewWindow) only
draw on a figure and handle its events, whichever backend shows it.

A window is anything with `fig` (its figure), `done` (bool) and `on_done` (None, or called once when
it is done: accepted, skipped, ended, or its figure closed). A host is any object with `open`, `figure`
and `run` as below; `DesktopHost` (TkAgg or QtAgg, on a desktop, over `ssh -X`, to VcXsrv) is the first.

Usage:
    host = DesktopHost()
    host.open()                                    # UsageError saying why where no window can open
    window = SmartSelector(host.figure(), ...)
    host.run(window)                               # returns once the window is done
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Protocol

from ..errors import UsageError

FIGURE_SIZE = (13, 7.5)  # inches


class Window(Protocol):
    fig: object  # a matplotlib Figure
    done: bool
    on_done: Callable[[], None] | None


class Host(Protocol):
    """Where windows are shown (see the module docstring)."""

    def open(self) -> None:
        """Make windows possible (pick the backend) or raise UsageError saying why not; may be called again."""

    def figure(self):
        """A new, empty matplotlib Figure for a window."""

    def run(self, window: Window) -> None:
        """Show the window's figure and handle its events until the window is done.

        It sets `window.on_done` to end the wait (the desktop host's closes the figure, which ends `plt.show`).
        """


class DesktopHost:
    """Windows on the desktop: matplotlib's QtAgg or TkAgg backend, `plt.show` as the event loop."""

    def open(self) -> None:
        use_window_backend()

    def figure(self):
        import matplotlib.pyplot as plt

        return plt.figure(figsize=FIGURE_SIZE)

    def run(self, window: Window) -> None:
        import matplotlib.pyplot as plt

        window.on_done = lambda: plt.close(window.fig)  # plt.show returns once its figures are closed
        plt.show(block=True)


def use_window_backend() -> None:
    """Pick an interactive backend (QtAgg where installed, else TkAgg) or explain why there is none."""
    import matplotlib

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError(
            "the SmartSelector needs a display, and DISPLAY is not set. Over SSH use `ssh -X`; "
            "from WSL or Docker start VcXsrv on Windows and set DISPLAY (e.g. host.docker.internal:0.0); "
            "on a server, rerun saved prompts with --headless"
        )
    import matplotlib.pyplot as plt

    if plt.get_backend().lower() in ("agg", "pdf", "svg", "ps", "cairo", "pgf", "template"):
        for backend in ("QtAgg", "TkAgg"):
            try:
                plt.switch_backend(backend)
                break
            except ImportError:
                continue
        else:
            import importlib.util

            # With DISPLAY naming no running server, matplotlib refuses every toolkit as "headless";
            # an installed toolkit (_tkinter: Tk's C part, absent without python3-tk) means the display is at fault.
            if not any(importlib.util.find_spec(m) for m in ("_tkinter", "PySide6", "PyQt6", "PyQt5", "PySide2")):
                raise UsageError("no window toolkit for matplotlib: install tkinter (python3-tk) or PySide6")
            var = "DISPLAY" if os.environ.get("DISPLAY") else "WAYLAND_DISPLAY"
            server = "X server" if var == "DISPLAY" else "Wayland compositor"
            raise UsageError(
                f"can't open the display {os.environ.get(var)!r} ({var}): no {server} answers there. "
                "Over SSH use `ssh -X`; from WSL or Docker start VcXsrv on Windows and set DISPLAY "
                "(e.g. host.docker.internal:0.0); on a server, rerun saved prompts with --headless"
            )
    # The window's own keys (Q, P, R, S, …) must not trigger matplotlib's default shortcuts.
    for key in [k for k in matplotlib.rcParams if k.startswith("keymap.")]:
        matplotlib.rcParams[key] = []
