"""GuideCanvas: one image in a matplotlib figure with its live masks, guides, sidebar and status; the mouse draws guides.

The canvas is a view of a `GuideState`; its event handlers only translate mouse events into state
changes, and its key actions (methods taking the key event, bound in `keys.py`) do the same for keys.
SAM 2's masks come from a `PreviewCache`; the visible part of the image from an `ImageView`; every
change is repainted in part by a `Repainter`. The canvas neither ends nor hosts anything: the
SmartSelector and the review window own one and decide what the keys that end a reference do.

Coordinates are image pixels, x right and y down, a pixel's centre at integers; rectangles
(x0, y0, x1, y1) are max exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..prompts.guide_state import GuideState
from ..types.guides import ObjectGuides, compose_mask
from ..utils.colors import color_for
from .keys import PAN_KEYS, SELECTOR_KEYS, KeyTable
from .preview_cache import PreviewCache
from .repaint import Repainter
from .view import ImageView

MASK_ALPHA = 0.45  # mask opacity
DRAG_PIXELS = 5  # a press that moves less than this (screen pixels) is a click
SLOTS = 9  # sidebar slots always shown
ZOOM_STEP = 2.0


@dataclass
class SessionInfo:
    """What the sidebar knows across references: on how many references each ID is guided, its last thumbnail."""

    classes: dict[int, str] = field(default_factory=dict)
    guided_on: dict[int, int] = field(default_factory=dict)
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)


class GuideCanvas:
    """One image in one figure: the image, live masks, guides, sidebar, status, help.

    figure: any matplotlib figure (a real window, a browser's, Agg in tests); the canvas clears it.
    rgb: (H, W, 3) uint8. preview: a `Preview`, a Future of one, or None (no model). keys: the table whose
    help and controls line the canvas shows. prior: masks per object ID that guides without a box or
    points start from (the review's predictions); their IDs are drawn even without guides, and with
    prior masks given, every ID is drawn from its guides, empty ones too (None: no prior). slots: the
    sidebar's IDs always listed (1..slots). slot_note: an ID's second sidebar line (default: on how
    many references it is guided). `guiding` False: the mouse changes nothing (and hovering redraws nothing).
    """

    def __init__(
        self,
        figure,
        rgb: np.ndarray,
        preview,
        state: GuideState | None = None,
        session: SessionInfo | None = None,
        title: str = "",
        keys: KeyTable | None = None,
        prior: dict[int, np.ndarray] | None = None,
        slots: int = SLOTS,
        slot_note: Callable[[int], str] | None = None,
    ):
        self.fig = figure
        self.rgb = rgb
        height, width = rgb.shape[:2]
        self.state = state or GuideState(width, height)
        self.session = session or SessionInfo()
        self.keys = keys or SELECTOR_KEYS
        self.prior = prior
        self.slots = slots
        self.slot_note = slot_note or self._guided_on_note
        self.guiding = True
        self.brush = False
        self.preview_on = True
        self.sam = PreviewCache(preview)
        self._press: tuple[float, float, float, float] | None = None  # x, y in image and screen
        self._stroking = False
        self._cursor_xy: tuple[float, float] | None = None  # the pointer over the image, image pixels
        self._waiting = False  # a mask waits for the image embedding
        self._timer = None
        # The image with the masks composited in; RGBA, as matplotlib would otherwise add alpha on every draw.
        self._display = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        self.repaint = Repainter(figure)
        self._build(title)
        self._refresh_masks()
        self._redraw_guides()
        self._cids = [figure.canvas.mpl_connect(name, handler) for name, handler in [
            ("button_press_event", self.on_press), ("button_release_event", self.on_release),
            ("motion_notify_event", self.on_motion), ("scroll_event", self.on_scroll),
            ("resize_event", self.on_resize),
        ]]
        if not self.sam.ready:
            self._timer = figure.canvas.new_timer(interval=150)
            self._timer.add_callback(self._poll_preview)
            self._timer.start()

    def disconnect(self) -> None:
        """Stop handling the figure's events, timers and repaints (before the figure is reused or closed)."""
        for cid in self._cids:
            self.fig.canvas.mpl_disconnect(cid)
        self._cids = []
        if self._timer is not None:
            self._timer.stop()
        self._timer = None
        self.repaint.stop()

    # ----- layout -----------------------------------------------------------------------------
    def _build(self, title: str) -> None:
        from matplotlib.patches import Circle, Rectangle

        fig = self.fig
        fig.clear()
        fig.set_facecolor("#202020")
        if fig.canvas.manager is not None and title:
            fig.canvas.manager.set_window_title(title)
        self.ax = fig.add_axes((0.005, 0.07, 0.79, 0.88))
        self.ax.set_axis_off()
        # The image and its translucent masks are composited into one array, updated only inside
        # the rectangle a change touches; the view draws its visible part at screen resolution.
        self.view = ImageView(self.ax, self._display, self.repaint, on_zoom=self._update_status)
        self.side = fig.add_axes((0.80, 0.07, 0.195, 0.88))
        self.side.set_axis_off()
        # Text is the costliest thing to draw; the sidebar and the controls line change rarely,
        # so they are rasterised offscreen once per change and drawn as images.
        self.side_artist = self.side.imshow(np.zeros((2, 2, 3), np.uint8), extent=(0, 1, 1, 0), aspect="auto",
                                            interpolation="nearest")
        self.controls = fig.add_axes((0.005, 0.0, 0.99, 0.06))
        self.controls.set_axis_off()
        self.controls_artist = self.controls.imshow(self._controls_raster(), aspect="auto", interpolation="nearest")
        self.title_text = fig.text(0.005, 0.985, title, color="white", va="top", fontsize=11, weight="bold")
        self.status_text = fig.text(0.995, 0.985, "", color="#f0c040", va="top", ha="right", fontsize=10)
        self.help_text = self.ax.text(
            0.5, 0.5, self.keys.help_text(), transform=self.ax.transAxes, ha="center", va="center",
            family="monospace", fontsize=9, color="white", bbox={"facecolor": "black", "alpha": 0.85},
            visible=False, zorder=10,
        )
        self.rubber_band = Rectangle((0, 0), 0, 0, fill=False, linestyle="--", linewidth=1.5, visible=False)
        self.ax.add_patch(self.rubber_band)
        self.cursor = Circle((0, 0), self.state.brush_radius, fill=False, color="white", linewidth=1, visible=False)
        self.ax.add_patch(self.cursor)
        self._guide_artists: list = []
        self._guide_keys: list[tuple] = []

    def _controls_raster(self) -> np.ndarray:
        return _text_raster(self.keys.controls_line(), self.fig, self.controls)

    # ----- masks: SAM 2's (or the prior) mask of each object, the brush on top ------------------
    def wait_for_preview(self) -> None:
        """Block until the image embedding is ready, then show the masks (tests and scripts)."""
        self.sam.wait()
        self._poll_preview()

    def _poll_preview(self) -> None:
        if not self.sam.ready:
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._changed()  # the masks, and the sidebar's thumbnails tinted by them

    def object_ids(self) -> list[int]:
        """The IDs whose masks are drawn: those with guides, and those with a prior mask."""
        return sorted(set(self.prior or ()) | set(self.state.ids()))

    def object(self, obj_id: int) -> ObjectGuides | None:
        """What `obj_id`'s mask is drawn from: its guides (empty ones with prior masks); None: nothing."""
        obj = self.state.object(obj_id)
        return obj if obj is not None or self.prior is None else ObjectGuides(obj_id)

    def _start_mask(self, obj: ObjectGuides) -> np.ndarray | None:
        """The mask the brush edits: SAM 2's of the box and points, else the prior one; None while not ready."""
        if obj.has_prompt:
            return self.sam.mask(obj, self.state.prompt_revision(obj.id))
        prior = (self.prior or {}).get(obj.id)
        return prior if prior is not None else np.zeros(self.rgb.shape[:2], dtype=bool)

    def _shown_mask(self, obj: ObjectGuides, rect=None) -> np.ndarray:
        """The mask drawn for `obj` in `rect`: the conditioning mask with the preview on, the brush alone without it."""
        ys, xs = _slices(rect, self.rgb.shape)
        start = self._start_mask(obj) if self.preview_on else None
        if start is None:
            start = np.zeros(self.rgb.shape[:2], dtype=bool)
        part = ObjectGuides(
            obj.id,
            paint=obj.paint[ys, xs] if obj.paint is not None else None,
            erase=obj.erase[ys, xs] if obj.erase is not None else None,
        )
        return compose_mask(start[ys, xs], part)

    def shown_mask(self, obj_id: int) -> np.ndarray:
        """(H, W) bool: where object `obj_id` is drawn (its conditioning mask with the preview on)."""
        obj = self.object(obj_id)
        return self._shown_mask(obj) if obj is not None else np.zeros(self.rgb.shape[:2], dtype=bool)

    def _refresh_masks(self, rect=None) -> None:
        """Recompose the masks over the image, in `rect` (x0, y0, x1, y1) only when given; redraw what changed."""
        ys, xs = _slices(rect, self.rgb.shape)
        image = self.rgb[ys, xs].astype(np.float32)
        shown = np.zeros(image.shape[:2], dtype=bool)
        tint = np.zeros_like(image)
        waiting = False
        for obj_id in self.object_ids():
            obj = self.object(obj_id)
            if obj is None:
                continue
            if self.preview_on and obj.has_prompt and self._start_mask(obj) is None:
                waiting = self.sam.source is not None
            mask = self._shown_mask(obj, rect)
            tint[mask] = color_for(obj_id)
            shown |= mask
        image[shown] += MASK_ALPHA * (tint[shown] - image[shown])
        self._display[ys, xs, :3] = image.astype(np.uint8)
        self.view.update(rect)
        self._waiting = waiting
        self._update_status()

    # ----- guides and sidebar -------------------------------------------------------------------
    def _redraw_guides(self) -> None:
        """Boxes and points of every object; only guides that appear, go or change are redrawn on screen."""
        with self.repaint.batch():
            wanted = []
            for obj_id in self.state.ids():
                obj = self.state.object(obj_id)
                color = tuple(np.array(color_for(obj_id)) / 255)
                width = 2.5 if obj_id == self.state.current_id else 1.2
                if obj.box is not None:
                    wanted.append(("box", tuple(obj.box), color, width))
                for (x, y), label in zip(obj.points, obj.labels):
                    wanted.append(("point", (x, y), color, label))
            unchanged: dict[tuple, list] = {}
            for key, artist in zip(self._guide_keys, self._guide_artists):
                unchanged.setdefault(key, []).append(artist)
            artists = []
            for key in wanted:
                artist = unchanged[key].pop() if unchanged.get(key) else self._guide_artist(key)
                if key not in self._guide_keys:
                    self.repaint.invalidate_artist(artist)
                artists.append(artist)
            for gone in unchanged.values():
                for artist in gone:
                    self.repaint.invalidate_artist(artist)
                    artist.remove()
            self._guide_keys, self._guide_artists = wanted, artists
            self.rubber_band.set_edgecolor(np.array(color_for(self.state.current_id)) / 255)
            self._redraw_sidebar()

    def _guide_artist(self, key: tuple):
        from matplotlib.patches import Rectangle

        if key[0] == "box":
            _, (x0, y0, x1, y1), color, width = key
            return self.ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color,
                                               linewidth=width))
        _, (x, y), color, label = key
        marker = dict(marker="o", markerfacecolor=color) if label else dict(marker="X", markerfacecolor="red")
        (line,) = self.ax.plot([x], [y], linestyle="none", markersize=9, markeredgecolor="white", **marker)
        return line

    def _sidebar_ids(self) -> list[int]:
        """The IDs the sidebar lists, top to bottom."""
        return sorted(set(range(1, self.slots + 1)) | set(self.session.guided_on) | set(self.prior or ())
                      | set(self.state.ids()) | {self.state.current_id})

    def _guided_on_note(self, obj_id: int) -> str:
        count = self.session.guided_on.get(obj_id, 0) + (self.state.object(obj_id) is not None)
        return f"on {count} reference(s)"

    def _redraw_sidebar(self) -> None:
        """Rasterise the sidebar: per ID its colour, two lines of text, a thumbnail; redraw the slots that changed."""
        from matplotlib.patches import Rectangle

        ids = self._sidebar_ids()
        self._slot_ids = ids
        h = self.slot_height

        def draw(ax):
            for row, obj_id in enumerate(ids):
                y = row * h
                current = obj_id == self.state.current_id
                if current:
                    ax.add_patch(Rectangle((0, y), 1, h, facecolor="#404040", edgecolor="white", linewidth=1))
                ax.add_patch(Rectangle((0.03, y + 0.15 * h), 0.1, 0.7 * h, color=np.array(color_for(obj_id)) / 255))
                name = self.session.classes.get(obj_id, "")
                ax.text(0.17, y + 0.35 * h, f"ID {obj_id}  {name}".rstrip(), color="white", fontsize=9, va="center",
                        weight="bold" if current else "normal")
                ax.text(0.17, y + 0.72 * h, self.slot_note(obj_id), color="#aaaaaa", fontsize=7, va="center")
                thumb = self._thumbnail(obj_id)
                if thumb is not None:
                    ax.imshow(thumb, extent=(0.72, 0.97, y + 0.92 * h, y + 0.08 * h), zorder=3)

        self.repaint.set_raster(self.side_artist, self.side, _raster(draw, self.fig, self.side))

    @property
    def slot_height(self) -> float:
        """Height of one sidebar slot, in sidebar axes units (0 at the top, 1 at the bottom)."""
        return min(0.1, 1.0 / len(self._slot_ids))

    def _thumbnail(self, obj_id: int) -> np.ndarray | None:
        """The object's last box (or mask) on this image, else its thumbnail from an earlier one."""
        obj = self.object(obj_id)
        if obj is None:
            return self.session.thumbnails.get(obj_id)
        thumb = object_thumbnail(self.rgb, obj, self._shown_mask(obj))
        if thumb is not None:
            self.session.thumbnails[obj_id] = thumb
        return thumb

    def _update_status(self) -> None:
        """The status line: the preview's state, the zoom, the brush."""
        if not self.preview_on:
            status = "preview off"
        elif self._waiting:
            status = "computing SAM 2 image embedding…"
        else:
            status = ""
        zoom = self.view.zoom_factor
        parts = [status, f"zoom {zoom:.3g}x" if zoom > 1.001 else "", "BRUSH" if self.brush else ""]
        self.repaint.set_text(self.status_text, "   ".join(p for p in parts if p))

    # ----- the pointer's marks: brush circle, rubber band ----------------------------------------
    def _redraw_cursor(self) -> None:
        """The brush circle under the pointer while the brush is on; only its old and new places are redrawn."""
        xy = self._cursor_xy if self.brush else None
        radius = self.state.brush_radius
        if xy is None and not self.cursor.get_visible():
            return
        if xy is not None and self.cursor.get_visible() and tuple(self.cursor.center) == xy and (
                self.cursor.radius == radius):
            return
        with self.repaint.changing(self.cursor):
            if xy is not None:
                self.cursor.center = xy
                self.cursor.set_radius(radius)
            self.cursor.set_visible(xy is not None)

    def _show_rubber_band(self, bounds: tuple[float, float, float, float] | None) -> None:
        """The dashed box being dragged, (x, y, width, height) in image pixels; hidden for None."""
        with self.repaint.changing(self.rubber_band):
            if bounds is not None:
                self.rubber_band.set_bounds(*bounds)
            self.rubber_band.set_visible(bounds is not None)

    # ----- mouse and window events: translate them into state changes ----------------------------
    def on_press(self, event) -> None:
        if not self.guiding:
            return
        if event.inaxes is self.side and event.ydata is not None:
            row = int(event.ydata / self.slot_height)
            if 0 <= row < len(self._slot_ids):
                self.state.select(self._slot_ids[row])
                self._changed()
            return
        if event.inaxes is not self.ax or event.xdata is None:
            return
        x, y = event.xdata, event.ydata
        if event.button == 2:
            self._delete_nearest(x, y)
        elif self.brush and event.button in (1, 3):
            self._stroking = True
            self._changed(self.state.begin_stroke(x, y, erase=event.button == 3), guides=False)
        elif event.button == 1:
            self._press = (x, y, event.x, event.y)
        elif event.button == 3:
            self.state.add_point(x, y, 0)
            self._changed()

    def on_motion(self, event) -> None:
        if not self.guiding:
            return
        if event.inaxes is not self.ax or event.xdata is None:
            self._cursor_xy = None
            self._redraw_cursor()
            return
        x, y = event.xdata, event.ydata
        self._cursor_xy = (x, y)
        if self._stroking:
            self._changed(self.state.extend_stroke(x, y), guides=False)
        elif self._press is not None:
            x0, y0 = self._press[:2]
            self._show_rubber_band((min(x0, x), min(y0, y), abs(x - x0), abs(y - y0)))
        self._redraw_cursor()

    def on_release(self, event) -> None:
        if not self.guiding:
            return
        if self._stroking:
            self._stroking = False
            self.state.end_stroke()
            self._changed()
            return
        if self._press is None:
            return
        x0, y0, sx, sy = self._press
        self._press = None
        self._show_rubber_band(None)
        x, y = (event.xdata, event.ydata) if event.inaxes is self.ax and event.xdata is not None else (x0, y0)
        if abs(event.x - sx) > DRAG_PIXELS or abs(event.y - sy) > DRAG_PIXELS:
            self.state.set_box(x0, y0, x, y)
        else:
            self.state.add_point(x0, y0, 1)
        self._changed()

    def on_scroll(self, event) -> None:
        if not self.guiding:
            return
        if self.brush:
            self._resize_brush(+2 if event.button == "up" else -2)

    def on_resize(self, event) -> None:
        # The view and the rasterised panels follow the window's size (a full draw follows).
        with self.repaint.batch():
            self.view.refit()
            self.repaint.set_raster(self.controls_artist, self.controls, self._controls_raster())
            self._redraw_sidebar()

    # ----- key actions (bound in keys.py): each takes the key event -------------------------------
    def toggle_brush(self, event=None) -> None:
        self.brush = not self.brush
        self._redraw_cursor()
        self._changed(guides=False, masks=False)

    def change_brush_size(self, event) -> None:
        self._resize_brush(-2 if event.key == "[" else +2)

    def select_id(self, event) -> None:
        self.state.select(int(event.key))
        self._changed()

    def next_unused_id(self, event=None) -> None:
        self.state.next_unused_id()
        self._changed()

    def delete_at_pointer(self, event=None) -> None:
        if self._cursor_xy is not None:
            self._delete_nearest(*self._cursor_xy)

    def undo(self, event=None) -> None:
        if self.state.undo():
            self._changed()

    def redo(self, event=None) -> None:
        if self.state.redo():
            self._changed()

    def clear(self, event=None) -> None:
        self.state.clear()
        self._changed()

    def toggle_preview(self, event=None) -> None:
        self.preview_on = not self.preview_on
        self._changed()

    def toggle_help(self, event=None) -> None:
        with self.repaint.changing(self.help_text):
            self.help_text.set_visible(not self.help_text.get_visible())

    def zoom_in(self, event=None) -> None:
        self.view.zoom(ZOOM_STEP, self._pointer(event))

    def zoom_out(self, event=None) -> None:
        self.view.zoom(1 / ZOOM_STEP)

    def reset_view(self, event=None) -> None:
        self.view.reset()

    def pan(self, event) -> None:
        self.view.pan(*PAN_KEYS[event.key])

    def _pointer(self, event) -> tuple[float, float] | None:
        """The pointer over the image (image pixels) at a key press, None when it is elsewhere."""
        xy = self._cursor_xy
        if event is not None and event.inaxes is self.ax and event.xdata is not None:
            xy = (event.xdata, event.ydata)
        height, width = self.rgb.shape[:2]
        if xy is None or not (-0.5 <= xy[0] <= width - 0.5 and -0.5 <= xy[1] <= height - 0.5):
            return None
        return xy

    # ----- state changes ------------------------------------------------------------------------
    def _delete_nearest(self, x: float, y: float) -> None:
        # Within a tolerance that grows with the image, so a far-away click deletes nothing.
        if self.state.delete_nearest(x, y, max_distance=0.1 * max(self.rgb.shape[:2])):
            self._changed()

    def _resize_brush(self, step: int) -> None:
        self.state.brush_radius = self.state.brush_radius + step
        self._redraw_cursor()

    def _changed(self, rect=None, guides: bool = True, masks: bool = True) -> None:
        """Redraw after a state change: the masks (only `rect` when given), the guides and sidebar, the status.

        Each part redraws on screen only where its pixels changed.
        """
        with self.repaint.batch():
            if masks:
                self._refresh_masks(rect)
            if guides:
                self._redraw_guides()
            self._update_status()


def object_thumbnail(rgb: np.ndarray, obj: ObjectGuides, mask: np.ndarray, size: int = 48) -> np.ndarray | None:
    """A small crop of the image around the object's box, else its mask, tinted by the mask."""
    import cv2

    if obj.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in obj.box)
    elif mask.any():
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    else:
        return None
    crop = rgb[y0:y1, x0:x1].astype(np.float32)
    if crop.size == 0:
        return None
    tint = mask[y0:y1, x0:x1, None]
    crop = np.where(tint, 0.6 * crop + 0.4 * np.array(color_for(obj.id)), crop)
    return cv2.resize(crop.astype(np.uint8), (size, size), interpolation=cv2.INTER_AREA)


def _raster(draw: Callable, fig, axes) -> np.ndarray:
    """Draw with `draw(ax)` on an offscreen figure the size of `axes` on screen; the pixels as (H, W, 4) uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bbox = axes.get_window_extent()
    offscreen = Figure(figsize=(max(bbox.width, 2) / fig.dpi, max(bbox.height, 2) / fig.dpi), dpi=fig.dpi,
                       facecolor=fig.get_facecolor())
    ax = offscreen.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    draw(ax)
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_aspect("auto")
    canvas = FigureCanvasAgg(offscreen)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _text_raster(text: str, fig, axes) -> np.ndarray:
    return _raster(lambda ax: ax.text(0.0, 0.5, text, color="#cccccc", fontsize=8, va="center", wrap=True),
                   fig, axes)


def _slices(rect, shape) -> tuple[slice, slice]:
    if rect is None:
        return slice(None), slice(None)
    x0, y0, x1, y1 = rect
    return slice(max(0, y0), min(shape[0], y1)), slice(max(0, x0), min(shape[1], x1))
