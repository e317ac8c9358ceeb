"""What every window host shares: the protocols of a window, a sequence of windows and a host (see the
package's docstring), a sequence of one window, and the driver of a sequence for hosts that don't block."""

from __future__ import annotations

from typing import Callable, ContextManager, Protocol


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


def without_default_keys(manager) -> None:
    """matplotlib's default shortcuts (s: save, f: full screen, l: log scale, …) off on this figure only: the
    windows' own keys are the same letters. (The desktop clears them process-wide: its figures are pyplot's.)"""
    for name in ("key_press_handler_id", "button_press_handler_id"):
        if getattr(manager, name, None) is not None:
            manager.canvas.mpl_disconnect(getattr(manager, name))
            setattr(manager, name, None)
