"""The desktop host: matplotlib's QtAgg or TkAgg backend, a window per figure, `plt.show` as the event loop;
on a desktop, over `ssh -X`, or to VcXsrv from WSL and Docker."""

from __future__ import annotations

import contextlib
import os
import sys

from ...errors import UsageError

FIGURE_SIZE = (13, 7.5)  # inches


class DesktopHost:
    """Windows on the desktop: matplotlib's QtAgg or TkAgg backend, `plt.show` as the event loop."""

    def open(self) -> None:
        use_window_backend()

    def run(self, sequence) -> None:
        import matplotlib.pyplot as plt

        def new_window():
            return plt.figure(figsize=FIGURE_SIZE)

        while (window := sequence.next_window(new_window)) is not None:
            window.on_done = lambda fig=window.fig: plt.close(fig)  # plt.show returns once its figures are closed
            plt.show(block=True)

    def progress(self, done: int, total: int) -> None:
        pass  # the terminal shows the batch's progress bar

    def reporting(self):
        return contextlib.nullcontext()  # and its log lines


def use_window_backend() -> None:
    """Pick an interactive backend (QtAgg where installed, else TkAgg) or explain why there is none."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError(
            "the SmartSelector needs a display, and DISPLAY is not set. Over SSH use `ssh -X`; "
            "from WSL or Docker start VcXsrv on Windows and set DISPLAY (e.g. host.docker.internal:0.0); "
            "on a server, guide in a browser with --web, or rerun saved prompts with --headless"
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
                "(e.g. host.docker.internal:0.0); on a server, guide in a browser with --web, or rerun saved "
                "prompts with --headless"
            )
    disable_default_keys()


def disable_default_keys() -> None:
    """The windows' own keys (Q, P, R, S, F, L, …) must not trigger matplotlib's default shortcuts."""
    import matplotlib

    for key in [k for k in matplotlib.rcParams if k.startswith("keymap.")]:
        matplotlib.rcParams[key] = []
