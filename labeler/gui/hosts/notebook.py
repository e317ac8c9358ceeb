"""The notebook host: the windows in a Jupyter, JupyterLab, VS Code or Colab cell, on ipympl's widget.

A kernel handles a widget's events only while it is idle, between cells, so this host never blocks:
`start(sequence, on_end)` shows the first window and returns; each window's `on_done` schedules the next
one on the kernel's event loop (`show_in_turn`). `labeler/gui/notebook.py` (`guide_in_notebook`,
`review_in_notebook`) turns that into a result a later cell reads.

What it changes in the kernel: ipympl's backend module is imported (which registers the hook that
`%matplotlib widget` registers too, idle while another backend is in use). matplotlib's backend,
pyplot's figures and rcParams stay as they are: the figure lives on an ipympl `Canvas` and
`FigureManager` of its own, outside pyplot, and matplotlib's default key shortcuts (S saves, P pans,
Q closes, …) are disconnected on that canvas alone, so the windows' keys reach only the windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from ...errors import UsageError
from .base import show_in_turn, without_default_keys
from .desktop import FIGURE_SIZE

__all__ = ["NOTEBOOK_DPI", "NotebookHost", "require_ipympl"]

NOTEBOOK_DPI = 72  # FIGURE_SIZE at 72 dpi: 936 x 540 CSS pixels, about a notebook cell's width
INSTALL = 'pip install -e ".[notebook]"'
# ipympl before 0.9.6 drops every key press under matplotlib 3.10 and later (ipympl issue #575, fixed by #577);
# 0.9.5 is the first to send the mouse buttons 3.10 reads (#568).
KEYS_FIXED_IN = (0, 9, 6)
_numbers = itertools.count(1)


class NotebookHost:
    """The windows in one ipympl widget, in the cell that opened it; the windows share its figure.

    Not a blocking host: `start(sequence, on_end)` shows the first window and returns; `on_end(error)`
    is called (on the kernel's thread) once the sequence is over or failed.
    """

    def __init__(self):
        self.figure = self.canvas = self.manager = self.healer = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Make the widget, or raise UsageError saying why not (no ipympl, not in a kernel)."""
        if self.canvas is not None:
            return
        require_ipympl()
        self._loop = _kernel_loop()
        from ipympl.backend_nbagg import Canvas, FigureManager
        from matplotlib.figure import Figure

        from .frames import FrameHealer

        self.figure = Figure(figsize=FIGURE_SIZE, dpi=NOTEBOOK_DPI)
        self.canvas = Canvas(self.figure)
        self.manager = FigureManager(self.canvas, next(_numbers))
        without_default_keys(self.manager)
        self.canvas.toolbar_visible = False  # its pan and zoom modes would take the mouse; the windows zoom themselves
        self.canvas.header_visible = False  # the figure shows its own title
        self.canvas.capture_scroll = True  # the wheel sizes the brush and zooms; the notebook mustn't scroll
        self.healer = FrameHealer(self.manager)

    def start(self, sequence, on_end) -> None:
        """Show the sequence's windows one after another, without waiting (see `hosts.show_in_turn`)."""
        show_in_turn(sequence, lambda: self.figure, self._loop.call_soon_threadsafe, on_end)

    def run(self, sequence) -> None:
        raise UsageError("a notebook can't wait for its windows (the kernel handles their events only between "
                         "cells): use labeler.guide_in_notebook or labeler.review_in_notebook")

    def show(self) -> None:
        """Display the widget in the cell that runs now."""
        from IPython.display import display

        display(self.canvas)

    def end(self, message: str) -> None:
        """The sequence is over: the widget shows `message` in place of the windows."""
        fig = self.figure
        fig.clear()
        fig.set_facecolor("#202020")
        fig.text(0.5, 0.5, message, color="white", ha="center", va="center", fontsize=13, wrap=True)
        self.canvas.draw_idle()

    def close(self) -> None:
        """Close the widget (a cell that failed before showing it)."""
        if self.canvas is not None:
            self.canvas.close()

    def progress(self, done: int, total: int) -> None:
        pass  # label_batch's progress bar shows in the cell that runs it

    def reporting(self):
        return contextlib.nullcontext()



def require_ipympl() -> None:
    """ipympl and ipywidgets importable, in versions that deliver keys and mouse buttons; else UsageError."""
    try:
        import ipympl
        import ipympl.backend_nbagg  # noqa: F401 (imports IPython and ipywidgets too)
    except ImportError as e:
        raise UsageError(f"the notebook widget needs ipympl ({e.name or e} can't be imported): {INSTALL}") from None
    import matplotlib

    version = _version(ipympl.__version__)
    if matplotlib.__version_info__[:2] >= (3, 10) and version < KEYS_FIXED_IN:
        raise UsageError(f"ipympl {ipympl.__version__} delivers no key presses under matplotlib "
                         f"{matplotlib.__version__} (ipympl 0.9.6 and later do): {INSTALL}, or pip install -U ipympl")


def _kernel_loop() -> asyncio.AbstractEventLoop:
    """The event loop of the kernel this runs in (the one that handles the widget's messages)."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        raise UsageError("guide_in_notebook and review_in_notebook run in a notebook cell (Jupyter, JupyterLab, "
                         "VS Code, Colab); in a terminal use `python main.py` (`--web` on a server)")
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a kernel that runs cells outside its loop: its tornado loop is the same one
        import tornado.ioloop

        return tornado.ioloop.IOLoop.current().asyncio_loop


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        parts.append(int(digits or 0))
    return tuple(parts)
