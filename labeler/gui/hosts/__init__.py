"""Window hosts: where the windows are shown. A host owns the matplotlib backend, makes the windows'
figures and handles their events until a sequence of windows is over; the windows (SmartSelector,
ReviewWindow) only draw on a figure and handle its events, whichever backend shows it.

A window is anything with `fig` (its figure), `done` (bool) and `on_done` (None, or called once when
it is done: accepted, skipped, ended, or its figure closed). A sequence gives the windows one after
another (`next_window`): the SmartSelector's references, the review's one window. Hosts:

- `DesktopHost` (`desktop.py`): TkAgg or QtAgg, on a desktop, over `ssh -X`, to VcXsrv; blocks.
- `WebHost` (`web.py`): one browser page, served by the labeler's own Tornado application on
  matplotlib's WebAgg core, behind a token; blocks.
- `NotebookHost` (`notebook.py`): a Jupyter cell with ipympl; returns at once, the result arrives later.

Usage:
    host = DesktopHost()
    host.open()                 # UsageError saying why where no window can open
    host.run(sequence)          # returns once the sequence is over
    with host.reporting():      # the work after the windows: the page shows its log lines and errors
        label_batch(..., on_progress=host.progress)
"""

from __future__ import annotations

import argparse
from typing import Callable, ContextManager, Protocol

from .desktop import FIGURE_SIZE, DesktopHost, use_window_backend

__all__ = ["FIGURE_SIZE", "WEB_DEFAULTS", "WEB_OPTIONS", "DesktopHost", "Host", "OneWindow", "Sequence", "Window",
           "host_for", "show_in_turn", "use_window_backend"]

# config.py name -> (option, argparse keywords), for `python main.py` and `python main.py review`.
WEB_OPTIONS = {
    "WEB": ("--web", dict(action=argparse.BooleanOptionalAction, help="the windows in a browser page, behind a "
                          "token (no X server needed); prints the page's URL")),
    "WEB_HOST": ("--web-host", dict(metavar="ADDR", help="--web: the address to serve on; anything but loopback "
                                    "lets whoever reaches the port with the token drive the labeler")),
    "WEB_PORT": ("--web-port", dict(type=int, metavar="PORT", help="--web: the port (0: a free one)")),
}
WEB_DEFAULTS = {"WEB": False, "WEB_HOST": "127.0.0.1", "WEB_PORT": 8988}


class Window(Protocol):
    fig: object  # a matplotlib Figure
    done: bool
    on_done: Callable[[], None] | None


class Sequence(Protocol):
    """Windows shown one after another."""

    def next_window(self, make_figure: Callable[[], object]) -> Window | None:
        """The next window, drawn on a figure from `make_figure()`, once the one before is done (or gone);
        None when the sequence is over."""


class Host(Protocol):
    """Where windows are shown (see the module docstring)."""

    def open(self) -> None:
        """Make windows possible (pick the backend, start the server) or raise UsageError saying why not;
        may be called again."""

    def run(self, sequence: Sequence) -> None:
        """Show the sequence's windows, each until it is done, until the sequence is over.

        It sets each window's `on_done` to move on to the next."""

    def progress(self, done: int, total: int) -> None:
        """The batch after the windows: `done` of `total` targets labeled."""

    def reporting(self) -> ContextManager:
        """Around the work after the windows: where the host shows its log lines and its error (the web
        page; the desktop leaves them to the terminal). The host is closed when it ends."""


def host_for(web: bool = False, address: str = WEB_DEFAULTS["WEB_HOST"], port: int = WEB_DEFAULTS["WEB_PORT"]):
    """The host the command line asks for: a browser page (`--web`), else the desktop."""
    if web:
        try:
            from .web import WebHost
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] != "tornado":
                raise
            from ...errors import UsageError

            raise UsageError('--web needs Tornado, in the web extra: pip install -e ".[web]"') from None
        return WebHost(address, port)
    return DesktopHost()


class OneWindow:
    """A sequence of one window, made by `build(figure)` (the review window)."""

    def __init__(self, build: Callable[[object], Window]):
        self.build = build
        self.window: Window | None = None

    def next_window(self, make_figure: Callable[[], object]) -> Window | None:
        if self.window is not None:
            return None
        self.window = self.build(make_figure())
        return self.window


def show_in_turn(sequence: Sequence, make_figure: Callable[[], object], schedule: Callable[[Callable], None],
                 on_end: Callable[[BaseException | None], None]) -> None:
    """Show the sequence's windows without blocking: a window's `on_done` schedules the next one (`schedule`
    runs a function soon, on the thread that handles the figure's events, after the handler that ended
    the window returns). `on_end(error)` once the sequence is over (error None) or failed."""

    def advance() -> None:
        try:
            window = sequence.next_window(make_figure)
        except BaseException as error:  # noqa: BLE001 (handed to the waiting side)
            on_end(error)
            return
        if window is None:
            on_end(None)
        else:
            window.on_done = lambda: schedule(advance)
            window.fig.canvas.draw_idle()  # the figure may already be on screen, showing the window before

    advance()
