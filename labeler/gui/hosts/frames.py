"""Frames for a browser: matplotlib's WebAgg core sends a PNG per refresh, the whole canvas ("full") or only
the pixels changed since the frame before ("diff", the rest transparent). A browser drops a diff frame
that arrives while the one before is still decoding (matplotlib issue #19116): the pixels it carried
stay stale, e.g. a ghost label left behind. The labeler's own page (web_page.html) draws every frame in
turn, so the browser host needs nothing more; ipympl's front end, which the labeler doesn't serve, can
drop them, so the notebook host has a `FrameHealer`: once the view has been idle for a moment, it sends one
more diff frame holding every pixel changed since the last such frame. After it the browser's canvas
equals the server's buffer, for the bytes of what changed rather than of a full frame.

This is the one place that reads the WebAgg canvas's private frame state (`_last_buff`: the pixels of
the last frame sent; `_png_is_old`: whether the buffer is newer than that frame; `_current_image_mode`),
which ipympl's canvas declares too; tests/gui/test_web.py checks the healing on matplotlib's own canvas.
"""

from __future__ import annotations

import time

import numpy as np

HEAL_AFTER_MS = 250  # idle this long, the stale pixels are sent again


class FrameHealer:
    """Wraps `manager.refresh_all` (a `FigureManagerWebAgg`'s, or ipympl's) to heal dropped diff frames."""

    def __init__(self, manager, delay_ms: int = HEAL_AFTER_MS):
        self.manager, self.canvas = manager, manager.canvas
        self.delay = delay_ms / 1000
        self._send = manager.refresh_all  # matplotlib's: one frame to every connected browser
        manager.refresh_all = self.refresh_all
        self._stale: np.ndarray | None = None  # pixels changed since the last healing frame
        self._healed: tuple[np.ndarray, float] | None = None  # the last healing frame's pixels, and when
        self.heals = 0
        self._timer = self.canvas.new_timer(interval=delay_ms)
        self._timer.single_shot = True
        self._timer.add_callback(self.heal)

    def refresh_all(self) -> None:
        before = self.canvas._last_buff
        self._send()
        after = self.canvas._last_buff
        if after is before:  # nothing was sent (no browser, or nothing new)
            return
        if self.canvas._current_image_mode == "full" or before.shape != after.shape:
            self._stale = self._healed = None  # a full frame replaces everything the browser has
            return
        changed = before != after
        if self._healed is not None and time.monotonic() - self._healed[1] < self.delay:
            changed |= self._healed[0]  # right behind the healing frame: that one may be dropped too
        self._healed = None
        self._stale = changed if self._stale is None else self._stale | changed
        self._timer.stop()
        self._timer.start()

    def heal(self) -> None:
        """Send every pixel changed since the last healing frame once more (the view is idle)."""
        stale, self._stale = self._stale, None
        if stale is None or not stale.any() or not self.manager.web_sockets:
            return
        canvas = self.canvas
        canvas._last_buff = np.where(stale, ~canvas._last_buff, canvas._last_buff)  # so the next diff holds them
        canvas._png_is_old = True
        self._send()
        self._healed = (stale, time.monotonic())
        self.heals += 1
