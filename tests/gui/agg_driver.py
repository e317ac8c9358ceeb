"""Driving a window on the Agg backend: matplotlib events sent through the figure's canvas, as a person would;
and a window host on Agg that hands each window to a script instead of running an event loop."""

from __future__ import annotations

from typing import Callable

from matplotlib.backend_bases import KeyEvent, MouseEvent


class Driver:
    """Sends mouse and key events at image coordinates, as a person at the window would.

    window: a SmartSelector or a ReviewWindow (anything with `fig` and its image axes `ax`).
    """

    def __init__(self, window):
        self.s = window
        self.canvas = window.fig.canvas
        self.canvas.draw()

    def _xy(self, x, y, axes=None):
        return (axes or self.s.ax).transData.transform((x, y))

    def mouse(self, name, x, y, button=None, axes=None):
        sx, sy = self._xy(x, y, axes)
        event = MouseEvent(name, self.canvas, sx, sy, button=button)
        self.canvas.callbacks.process(name, event)

    def click(self, x, y, button=1):
        self.mouse("button_press_event", x, y, button)
        self.mouse("button_release_event", x, y, button)

    def drag(self, points, button=1):
        self.mouse("button_press_event", *points[0], button)
        for p in points[1:]:
            self.mouse("motion_notify_event", *p)
        self.mouse("button_release_event", *points[-1], button)

    def key(self, key, at=None):
        if at is not None:
            self.mouse("motion_notify_event", *at)
        self.canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", self.canvas, key))


class ScriptedHost:
    """A window host on Agg: `run(sequence)` calls `script(window)` (which drives it) for each window in place of an event loop.

    `windows` lists the windows run, in order; `closed` those whose figure the host closed when they were done.
    """

    def __init__(self, script: Callable):
        self.script = script
        self.windows: list = []
        self.closed: list = []

    def open(self) -> None:
        pass

    def run(self, sequence) -> None:
        import matplotlib.pyplot as plt

        def new_figure():
            return plt.figure(figsize=(13, 7.5))

        while (window := sequence.next_window(new_figure)) is not None:
            def close(window=window):
                self.closed.append(window)
                plt.close(window.fig)

            window.on_done = close
            self.windows.append(window)
            self.script(window)

    def progress(self, done: int, total: int) -> None:
        pass

    def reporting(self):
        import contextlib

        return contextlib.nullcontext()
