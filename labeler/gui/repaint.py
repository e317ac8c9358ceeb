"""Partial repaints of a figure: only the screen rectangles a change touches are redrawn and sent to the screen.

Built for remote displays (`ssh -X`, VcXsrv), where every pixel drawn crosses the network uncompressed.
A change marks the rectangles it touches (`invalidate`, `invalidate_artist`, `changing`, `set_text`,
`set_raster`); `repaint` redraws only those, every artist clipped to them in the order a full draw
paints them, and blits them alone. The whole figure is drawn only on first show and on resize.

Rectangles are display pixels (matplotlib's: origin at the figure's bottom left, y up), as Bboxes or
as (x0, y0, x1, y1) integer tuples, max exclusive.

Usage:
    repaint = Repainter(fig)
    with repaint.changing(artist):     # its old place and its new one, in one repaint
        artist.set_visible(False)
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

MAX_DIRTY = 32  # more dirty rectangles than this are redrawn as their union


class Repainter:
    """The dirty rectangles of one figure and their repaint, once per turn of the event loop.

    Changes inside `batch()` (nested or not) are repainted once, after the outermost ends. Before the
    first full draw nothing is marked: that draw paints everything.
    """

    def __init__(self, figure):
        from matplotlib.backend_bases import TimerBase

        self.fig = figure
        self._dirty: list[tuple[int, int, int, int]] = []
        self._drawn = False
        self._pending = False
        self._depth = 0  # inside `batch()` the repaint waits for the outermost block to end
        self._rasters: dict[int, np.ndarray] = {}  # the rasters shown, per artist, to diff the next against
        self._stopped = False
        self._timer = figure.canvas.new_timer(interval=1)
        self._timer.single_shot = True
        self._timer.add_callback(self.repaint)
        # Without an event loop (Agg: tests, scripts) timers never fire: repaint at once.
        self._now = type(self._timer) is TimerBase
        self._cid = figure.canvas.mpl_connect("draw_event", self._on_draw)

    def stop(self) -> None:
        """No more repaints (the window is done, or its figure shows something else now)."""
        self._stopped = True
        self._timer.stop()
        self.fig.canvas.mpl_disconnect(self._cid)

    @contextlib.contextmanager
    def batch(self):
        """Repaint once, after the block: the old places and the new ones of what it moves together."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._dirty:
                self.request()

    @contextlib.contextmanager
    def changing(self, artist):
        """Redraw where `artist` is drawn before the block and where it is drawn after it, in one repaint."""
        with self.batch():
            self.invalidate_artist(artist)
            yield
            self.invalidate_artist(artist)

    def invalidate(self, *boxes) -> None:
        """Mark screen rectangles (Bboxes in display pixels; None skipped) to redraw at the next repaint."""
        if not self._drawn:
            return  # the first full draw paints everything
        fig_w, fig_h = self.fig.bbox.width, self.fig.bbox.height
        for box in boxes:
            if box is None or not np.all(np.isfinite(box.extents)):
                continue
            x0, y0 = max(math.floor(box.x0), 0), max(math.floor(box.y0), 0)
            x1, y1 = min(math.ceil(box.x1), int(fig_w)), min(math.ceil(box.y1), int(fig_h))
            if x1 > x0 and y1 > y0:
                self._dirty.append((x0, y0, x1, y1))
        if self._dirty and not self._depth:
            self.request()

    def invalidate_artist(self, artist) -> None:
        """Mark where `artist` is drawn now (nothing when hidden); of an unfilled rectangle, its edges alone."""
        from matplotlib.patches import Rectangle
        from matplotlib.text import Text
        from matplotlib.transforms import Bbox

        if not self._drawn or not artist.get_visible():
            return
        box = extent(artist, self.fig.canvas.get_renderer())
        # Line width and antialiasing reach past the geometry; a text's background box further.
        pad = 10 if isinstance(artist, Text) else 2.5 + artist.get_linewidth() * self.fig.dpi / 72 / 2
        if isinstance(artist, Rectangle) and not artist.get_fill():
            x0, y0, x1, y1 = box.extents
            self.invalidate(*(Bbox.from_extents(*e) for e in [
                (x0 - pad, y0 - pad, x1 + pad, y0 + pad), (x0 - pad, y1 - pad, x1 + pad, y1 + pad),
                (x0 - pad, y0 - pad, x0 + pad, y1 + pad), (x1 - pad, y0 - pad, x1 + pad, y1 + pad)]))
        else:
            self.invalidate(box.padded(pad))

    def set_text(self, artist, text: str) -> None:
        """Change a text (a title, a status line); only its old and new extents are redrawn."""
        if artist.get_text() != text:
            with self.changing(artist):
                artist.set_text(text)

    def set_raster(self, artist, axes, raster: np.ndarray) -> None:
        """Show `raster` in `artist`, an image filling `axes`; only the part that changed is redrawn."""
        from matplotlib.transforms import Bbox

        old = self._rasters.get(id(artist))
        self._rasters[id(artist)] = raster
        artist.set_data(raster)
        if old is None or old.shape != raster.shape:
            self.invalidate(axes.bbox)
            return
        changed = (old != raster).any(axis=-1)
        if not changed.any():
            return
        rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
        b, (h, w) = axes.bbox, raster.shape[:2]
        self.invalidate(Bbox.from_extents(
            b.x0 + cols[0] * b.width / w, b.y1 - (rows[-1] + 1) * b.height / h,
            b.x0 + (cols[-1] + 1) * b.width / w, b.y1 - rows[0] * b.height / h).padded(2))

    def request(self) -> None:
        """Repaint the dirty rectangles soon: once for all the changes of this turn of the event loop."""
        if self._now:
            self.repaint()
        elif not self._pending and not self._stopped:
            self._pending = True
            self._timer.start()

    def repaint(self) -> None:
        """Redraw the dirty rectangles, each artist clipped to them, and send only them to the screen."""
        from matplotlib.transforms import Bbox

        self._pending = False
        boxes, self._dirty = merge_boxes(self._dirty), []
        if not boxes or not self._drawn or self._stopped:
            return
        canvas = self.fig.canvas
        artists = draw_order(self.fig)
        if artists is None:  # an axes with ticks and labels: not drawn in parts
            canvas.draw()
            return
        renderer = canvas.get_renderer()
        boxes = [Bbox.from_extents(*box) for box in boxes]
        for box in boxes:
            paint(renderer, artists, box)
        if canvas.supports_blit:
            for box in boxes:
                canvas.blit(box)
        else:  # WebAgg: a blit sends one frame of every changed pixel, so one for all the boxes
            canvas.blit()

    def _on_draw(self, event) -> None:
        # A full draw (first show, resize, or anyone's draw_idle) has painted everything.
        self._drawn = True
        self._dirty = []


def draw_order(fig) -> list | None:
    """The artists a full draw of `fig` paints, innermost first, in its order; None if an axes shows its axis."""
    from matplotlib.axes import Axes

    order = [fig.patch]
    for artist in sorted((a for a in fig.get_children() if a is not fig.patch and not a.get_animated()),
                         key=lambda a: a.get_zorder()):
        if not isinstance(artist, Axes):
            order.append(artist)
            continue
        if artist.axison:
            return None
        skip = {artist.patch, artist.xaxis, artist.yaxis, *artist.spines.values()}  # not drawn with the axis off
        order += sorted((c for c in artist.get_children() if c not in skip and not c.get_animated()),
                        key=lambda c: c.get_zorder())
    return order


def paint(renderer, artists: list, box) -> None:
    """Redraw everything inside `box` (display pixels): each artist, in drawing order, clipped to it."""
    from matplotlib.transforms import Bbox

    for artist in artists:
        if not artist.get_visible():
            continue
        on, clip_box, clip_path = artist.get_clip_on(), artist.get_clip_box(), artist.get_clip_path()
        clip = Bbox.intersection(clip_box, box) if on and clip_box is not None else box
        if clip is None:
            continue
        if artist is not artists[0]:  # the background always; others only where they reach
            reach = extent(artist, renderer).padded(12)
            if Bbox.intersection(reach, clip) is None:
                continue
        artist.set_clip_on(True)
        artist.set_clip_box(clip)
        if not on:
            artist.set_clip_path(None)  # a full draw does not clip it at all
        try:
            artist.draw(renderer)
        finally:
            artist.set_clip_on(on)
            artist.set_clip_box(clip_box)
            artist.set_clip_path(clip_path)


def extent(artist, renderer):
    """Where `artist` draws, in display pixels, before line widths: its window extent, quickly for patches."""
    from matplotlib.patches import Patch
    from matplotlib.transforms import Bbox

    if isinstance(artist, Patch) and len(artist.get_path().vertices):
        # The box of the path's control points holds its curves, and skips matplotlib's exact (slow) extrema.
        points = artist.get_transform().transform(artist.get_path().vertices)
        return Bbox([points.min(axis=0), points.max(axis=0)])
    return artist.get_window_extent(renderer)


def merge_boxes(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Merge rectangles whose union costs no more pixels than the two apart (overlapping, adjoining)."""
    def area(b):
        return (b[2] - b[0]) * (b[3] - b[1])

    boxes = list(dict.fromkeys(boxes))
    if len(boxes) > MAX_DIRTY:
        return [(min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                 max(b[3] for b in boxes))]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                if area(union) <= area(a) + area(b):
                    boxes[i] = union
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes
