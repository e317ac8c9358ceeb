"""Driving a window on the Agg backend: matplotlib events sent through the figure's canvas, as a person would."""

from __future__ import annotations

from matplotlib.backend_bases import KeyEvent, MouseEvent

from labeler.gui.selector import SmartSelector


class Driver:
    """Sends mouse and key events at image coordinates, as a person at the window would."""

    def __init__(self, selector: SmartSelector):
        self.s = selector
        self.canvas = selector.fig.canvas
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
