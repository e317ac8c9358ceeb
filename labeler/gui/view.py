"""The image in its axes as the screen shows it: zoom, pan, and the visible part resampled to screen pixels.

Coordinates are image pixels, x right and y down, a pixel's centre at integer coordinates (matplotlib's
`imshow` and OpenCV's convention: the image spans -0.5 .. width - 0.5). The axes' limits are the view.
What matplotlib draws is not the image but its visible part resampled to the screen pixels it covers
(the "view"), so a redraw never resamples more pixels than the window shows, however large the image.

Usage:
    view = ImageView(ax, composite, repaint)   # composite: (H, W, 4) uint8, changed in place by its owner
    composite[y0:y1, x0:x1] = ...; view.update((x0, y0, x1, y1))
    view.zoom(2.0, (120, 80)); view.pan(0.25, 0.0); view.reset()
"""

from __future__ import annotations

from typing import Callable

import numpy as np

MIN_VIEW = 8  # image pixels: the closest zoom still shows this many across the view's shorter side


class ImageView:
    """The view of `composite` in `ax`; changes are marked for `repaint` (a `Repainter`).

    `on_zoom` is called after `zoom`, `pan` or `reset` moved the view (the status line shows the zoom).
    """

    def __init__(self, ax, composite: np.ndarray, repaint, on_zoom: Callable[[], None] | None = None):
        self.ax = ax
        self.composite = composite
        self.repaint = repaint
        self.on_zoom = on_zoom
        self.artist = ax.imshow(composite, interpolation="antialiased")
        ax.set_autoscale_on(False)
        self._box: tuple[int, int, int, int] | None = None  # the composite's part the view shows
        self._view: np.ndarray | None = None
        # Zoom and pan (ours, or the toolbar's) change the limits: refit the view to them.
        ax.callbacks.connect("xlim_changed", lambda ax: self.fit())
        ax.callbacks.connect("ylim_changed", lambda ax: self.fit())

    def fit(self) -> None:
        """Size the view for the image's visible part (after zoom, pan, resize); the image area is redrawn."""
        height, width = self.composite.shape[:2]
        before = self.ax.bbox.frozen()
        self.ax.apply_aspect()  # the axes' box for these limits, as the next full draw places it
        (x0, x1), (y1, y0) = self.ax.get_xlim(), self.ax.get_ylim()
        box = (max(0, int(np.floor(x0 + 0.5))), max(0, int(np.floor(y0 + 0.5))),
               min(width, int(np.ceil(x1 + 0.5))), min(height, int(np.ceil(y1 + 0.5))))
        if box[2] <= box[0] or box[3] <= box[1]:
            self._box = None
            return
        pixels = self.ax.get_window_extent()
        scale = min(1.0, pixels.width / max(x1 - x0, 1), pixels.height / max(y1 - y0, 1))
        self._box = box
        size = (max(1, round((box[2] - box[0]) * scale)), max(1, round((box[3] - box[1]) * scale)))
        self._view = self._resample(box, 0, 0, *size, size)
        self.artist.set_extent((box[0] - 0.5, box[2] - 0.5, box[3] - 0.5, box[1] - 0.5))
        self.artist.set_data(self._view)
        self.repaint.invalidate(before, self.ax.bbox)

    def refit(self) -> None:
        """Fit the view anew (the window's size changed)."""
        self._box = None
        self.fit()

    def update(self, rect=None) -> None:
        """Bring the view up to date with the composite in `rect` (x0, y0, x1, y1; all when None).

        Only the view pixels that changed are redrawn on screen.
        """
        if self._box is None:
            self.fit()
            return
        bx0, by0, bx1, by1 = self._box
        rect = rect or self._box
        vh, vw = self._view.shape[:2]
        fx, fy = vw / (bx1 - bx0), vh / (by1 - by0)
        # View pixels the change touches.
        vx0, vy0 = max(0, int((rect[0] - bx0) * fx)), max(0, int((rect[1] - by0) * fy))
        vx1, vy1 = min(vw, int(np.ceil((rect[2] - bx0) * fx))), min(vh, int(np.ceil((rect[3] - by0) * fy)))
        if vx1 <= vx0 or vy1 <= vy0:
            return
        block = self._view[vy0:vy1, vx0:vx1]
        new = self._resample(self._box, vx0, vy0, vx1, vy1, (vw, vh))
        changed = (new != block).any(axis=-1)
        if not changed.any():
            return
        block[...] = new
        self.artist.set_data(self._view)
        rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
        self.repaint.invalidate(self._extent(vx0 + cols[0], vy0 + rows[0], vx0 + cols[-1] + 1, vy0 + rows[-1] + 1))

    def _resample(self, box, vx0, vy0, vx1, vy1, size) -> np.ndarray:
        """View pixels [vy0:vy1, vx0:vx1] of a (W, H) `size` view of the composite's `box`."""
        import cv2

        bx0, by0, bx1, by1 = box
        fx, fy = size[0] / (bx1 - bx0), size[1] / (by1 - by0)
        src = self.composite[by0 + int(vy0 / fy): by0 + int(np.ceil(vy1 / fy)),
                             bx0 + int(vx0 / fx): bx0 + int(np.ceil(vx1 / fx))]
        if src.shape[:2] == (vy1 - vy0, vx1 - vx0):
            return src.copy()
        return cv2.resize(src, (vx1 - vx0, vy1 - vy0), interpolation=cv2.INTER_AREA)

    def _extent(self, vx0, vy0, vx1, vy1):
        """The screen rectangle where view pixels [vy0:vy1, vx0:vx1] are drawn, with the resampling's reach."""
        from matplotlib.transforms import Bbox

        bx0, by0, bx1, by1 = self._box
        vh, vw = self._view.shape[:2]
        sx, sy = (bx1 - bx0) / vw, (by1 - by0) / vh  # image pixels per view pixel
        # One view pixel more on each side: the resampling filter reaches that far.
        corners = [(bx0 - 0.5 + (vx0 - 1) * sx, by0 - 0.5 + (vy0 - 1) * sy),
                   (bx0 - 0.5 + (vx1 + 1) * sx, by0 - 0.5 + (vy1 + 1) * sy)]
        points = self.ax.transData.transform(corners)  # y flips: take the corners' min and max
        return Bbox.intersection(Bbox([points.min(axis=0), points.max(axis=0)]).padded(1), self.ax.bbox)

    # ----- zoom and pan: the axes' limits -------------------------------------------------------
    def zoom(self, factor: float, center: tuple[float, float] | None = None) -> None:
        """Zoom by `factor` (2: in, 0.5: out) onto `center` (image pixels; default: the view's centre)."""
        (x0, x1), (y1, y0) = self.ax.get_xlim(), self.ax.get_ylim()
        cx, cy = center if center is not None else ((x0 + x1) / 2, (y0 + y1) / 2)
        w, h = (x1 - x0) / factor, (y1 - y0) / factor
        self.show(cx - w / 2, cy - h / 2, w, h)

    def pan(self, dx: float, dy: float) -> None:
        """Move the view by `dx` of its width and `dy` of its height (positive: right, down)."""
        (x0, x1), (y1, y0) = self.ax.get_xlim(), self.ax.get_ylim()
        w, h = x1 - x0, y1 - y0
        self.show(x0 + dx * w, y0 + dy * h, w, h)

    def reset(self) -> None:
        """Show the whole image."""
        height, width = self.composite.shape[:2]
        self.show(-0.5, -0.5, width, height)

    @property
    def zoom_factor(self) -> float:
        """How many times the view is magnified over the whole image (1: the whole image)."""
        x0, x1 = self.ax.get_xlim()
        return self.composite.shape[1] / (x1 - x0)

    def show(self, x0: float, y0: float, w: float, h: float) -> None:
        """Show the image region at (x0, y0) of size (w, h), with the whole image's aspect, inside the image."""
        height, width = self.composite.shape[:2]
        # The whole image's aspect keeps the axes' box, so only the image area is redrawn.
        scale = min(max(w / width, h / height, MIN_VIEW / min(width, height)), 1.0)
        cx, cy = x0 + w / 2, y0 + h / 2
        w, h = width * scale, height * scale
        x0 = min(max(cx - w / 2, -0.5), width - 0.5 - w)
        y0 = min(max(cy - h / 2, -0.5), height - 0.5 - h)
        xlim, ylim = (x0, x0 + w), (y0 + h, y0)
        if np.allclose([*self.ax.get_xlim(), *self.ax.get_ylim()], [*xlim, *ylim]):
            return
        with self.repaint.batch():
            with self.ax.callbacks.blocked():  # one refit below, not one per limit
                self.ax.set_xlim(*xlim)
                self.ax.set_ylim(*ylim)
            self.fit()
            if self.on_zoom is not None:
                self.on_zoom()
