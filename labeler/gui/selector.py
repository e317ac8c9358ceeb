"""SmartSelector: draw guides on reference images in a matplotlib window, with SAM 2's mask shown live.

The window is a view of a `GuideState`; its event handlers only translate mouse and key events
into state changes. The reference's image embedding is computed on a background thread while the
window is already open; each guide change reruns only SAM 2's prompt encoder and mask decoder.

Drawing is built for remote displays (`ssh -X`, VcXsrv), where every pixel drawn crosses the
network uncompressed: a change marks the screen rectangles it touches (`_invalidate`), and
`_repaint` redraws only those, every artist clipped to them, and blits them alone. A brush move
sends its stroke's rectangle, a guide change the pixels its mask changed. The whole figure is drawn
only on first show and resize.

Usage: `prompts = run_selector(reference_paths, backend, classes, Path("output/prompts.json"))`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UsageError
from ..models.backend import Preview
from ..prompts.guide_state import GuideState
from ..prompts.prompt_set import ObjectGuides, PromptSet, ReferenceGuides, save_prompts
from ..types.guides import compose_mask
from ..utils.colors import color_for
from ..utils.images import read_rgb

log = logging.getLogger(__name__)

CONTROLS = (
    "drag: box · click: + point · right-click: − point · B: brush (wheel, [ ]: size) · "
    "1–9, N: object ID · D/middle: delete · U/ctrl+z: undo · shift+U/ctrl+y: redo · R: clear · "
    "P: preview · +/-/0: zoom in/out/all · shift+arrows: pan · Enter/Q: accept · Esc: skip · H: help"
)
HELP = """SmartSelector controls

Left-drag            box around the object
Left click           positive point
Right click          negative point
B                    brush on/off
  left-drag          paint      right-drag   erase
  wheel or [ ]       brush size
1-9                  select object ID
N                    next unused ID
click a sidebar slot select that ID
D or middle click    delete the guide nearest the cursor
U or ctrl+z          undo        shift+U or ctrl+y   redo
R                    clear the current object
P                    live preview on/off
+ or =  /  -         zoom in 2x at the cursor / zoom out 2x
0                    whole image
shift+arrows         pan a quarter of the view
Enter or Q           accept this reference and go on
Esc                  skip this reference
Closing the window   accepts it
H                    this help"""
MASK_ALPHA = 0.45  # mask opacity
DRAG_PIXELS = 5  # a press that moves less than this (screen pixels) is a click
SLOTS = 9  # sidebar slots always shown
ZOOM_STEP = 2.0
MIN_VIEW = 8  # image pixels: the closest zoom still shows this many across the view's shorter side
PAN_KEYS = {"shift+left": (-0.25, 0.0), "shift+right": (0.25, 0.0), "shift+up": (0.0, -0.25),
            "shift+down": (0.0, 0.25)}  # a quarter of the view
MAX_DIRTY = 32  # more dirty rectangles than this are redrawn as their union


def _batched(method):
    """Repaint once, after the method: the old places and the new ones of what it moves together."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        self._batch_depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self._batch_depth -= 1
            if not self._batch_depth and self._dirty:
                self._request_repaint()

    return wrapper


@dataclass
class SessionInfo:
    """What the sidebar knows across references: on how many references each ID is guided, its last thumbnail."""

    classes: dict[int, str] = field(default_factory=dict)
    guided_on: dict[int, int] = field(default_factory=dict)
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)


class SmartSelector:
    """One reference in one figure: image, live masks, guides, sidebar.

    The figure can be any matplotlib figure (a real window, or Agg in tests); `result` is set
    when the reference is accepted (a `ReferenceGuides`) and stays None when it is skipped.

    Subclasses change what is drawn through the hooks `guiding` (whether the mouse edits), `_object_ids`,
    `_object`, `_sam_mask`, `_sidebar_ids`, `_sidebar_lines` and the class attributes CONTROLS and HELP. After changing
    state, `_changed(rect)` redraws the masks (only in `rect` when given), guides, sidebar and status;
    `_set_text(artist, text)` changes a text (title, status) and redraws only it.
    """

    CONTROLS = CONTROLS
    HELP = HELP
    guiding = True  # the mouse draws guides (a subclass may show without editing)

    def __init__(
        self,
        figure,
        image_path: Path,
        rgb: np.ndarray,
        preview: Future | Preview | None,
        state: GuideState | None = None,
        session: SessionInfo | None = None,
        title: str = "",
        on_done: Callable[[], None] | None = None,
    ):
        from matplotlib.backend_bases import TimerBase

        self.fig = figure
        self.image_path = Path(image_path)
        self.rgb = rgb
        height, width = rgb.shape[:2]
        self.state = state or GuideState(width, height)
        self.session = session or SessionInfo()
        self.result: ReferenceGuides | None = None
        self.done = False
        self.brush = False
        self.preview_on = True
        self._preview = preview
        self._sam_masks: dict[int, tuple[int, np.ndarray]] = {}  # id -> (prompt revision, mask)
        self._press: tuple[float, float, float, float] | None = None  # x, y in image and screen
        self._stroking = False
        self._cursor_xy: tuple[float, float] | None = None  # the pointer over the image, image pixels
        self._waiting = False  # a mask waits for the image embedding
        self._on_done = on_done
        self._timer = None
        # Partial redraws: screen rectangles (x0, y0, x1, y1) to redraw, valid after the first full draw.
        self._dirty: list[tuple[int, int, int, int]] = []
        self._drawn = False
        self._repaint_pending = False
        self._batch_depth = 0  # inside `_batched` methods the repaint waits for the outermost to end
        self._rasters: dict[int, np.ndarray] = {}  # the sidebar's and controls' rasters shown, to diff
        # The image with the masks composited in; RGBA, as matplotlib would otherwise add alpha on every draw.
        self._display = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        self._build(title)
        self._repaint_timer = figure.canvas.new_timer(interval=1)
        self._repaint_timer.single_shot = True
        self._repaint_timer.add_callback(self._repaint)
        # Without an event loop (Agg: tests, scripts) timers never fire: repaint at once.
        self._repaint_now = type(self._repaint_timer) is TimerBase
        self._refresh_masks()
        self._redraw_guides()
        self._cids = [figure.canvas.mpl_connect(name, handler) for name, handler in [
            ("button_press_event", self.on_press), ("button_release_event", self.on_release),
            ("motion_notify_event", self.on_motion), ("scroll_event", self.on_scroll),
            ("key_press_event", self.on_key), ("close_event", self.on_close),
            ("resize_event", self.on_resize), ("draw_event", self._on_draw),
        ]]
        if not self.preview_ready:
            self._timer = figure.canvas.new_timer(interval=150)
            self._timer.add_callback(self._poll_preview)
            self._timer.start()

    def disconnect(self) -> None:
        """Stop handling the figure's events and timers (before the figure is reused or closed)."""
        for cid in self._cids:
            self.fig.canvas.mpl_disconnect(cid)
        self._cids = []
        for timer in (self._timer, self._repaint_timer):
            if timer is not None:
                timer.stop()
        self._timer = None

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
        # the rectangle a change touches. What matplotlib draws is that array resampled to the
        # screen pixels of the visible part (`_update_view`), so a redraw never resamples more
        # pixels than the window shows, however large the reference.
        self.image_artist = self.ax.imshow(self._display, interpolation="antialiased")
        self.ax.set_autoscale_on(False)
        self._view_box = None
        # Zoom and pan (ours, or the toolbar's) change the limits: refit the view to them.
        self.ax.callbacks.connect("xlim_changed", lambda ax: self._fit_view())
        self.ax.callbacks.connect("ylim_changed", lambda ax: self._fit_view())
        self.side = fig.add_axes((0.80, 0.07, 0.195, 0.88))
        self.side.set_axis_off()
        # Text is the costliest thing to draw; the sidebar and the controls line change rarely,
        # so they are rasterised offscreen once per change and drawn as images.
        self.side_artist = self.side.imshow(np.zeros((2, 2, 3), np.uint8), extent=(0, 1, 1, 0), aspect="auto",
                                            interpolation="nearest")
        self.controls = fig.add_axes((0.005, 0.0, 0.99, 0.06))
        self.controls.set_axis_off()
        self.controls_artist = self.controls.imshow(_text_raster(self.CONTROLS, fig, self.controls), aspect="auto",
                                                    interpolation="nearest")
        self.title_text = fig.text(0.005, 0.985, title, color="white", va="top", fontsize=11, weight="bold")
        self.status_text = fig.text(0.995, 0.985, "", color="#f0c040", va="top", ha="right", fontsize=10)
        self.help_text = self.ax.text(
            0.5, 0.5, self.HELP, transform=self.ax.transAxes, ha="center", va="center", family="monospace",
            fontsize=9, color="white", bbox={"facecolor": "black", "alpha": 0.85}, visible=False, zorder=10,
        )
        self.rubber_band = Rectangle((0, 0), 0, 0, fill=False, linestyle="--", linewidth=1.5, visible=False)
        self.ax.add_patch(self.rubber_band)
        self.cursor = Circle((0, 0), self.state.brush_radius, fill=False, color="white", linewidth=1, visible=False)
        self.ax.add_patch(self.cursor)
        self._guide_artists: list = []
        self._guide_keys: list[tuple] = []

    # ----- preview ----------------------------------------------------------------------------
    @property
    def preview_ready(self) -> bool:
        return not isinstance(self._preview, Future) or self._preview.done()

    def wait_for_preview(self) -> None:
        """Block until the image embedding is ready, then show the masks (tests and scripts)."""
        if isinstance(self._preview, Future):
            self._preview.result()
        self._poll_preview()

    def _poll_preview(self) -> None:
        if not self.preview_ready:
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._changed()  # the masks, and the sidebar's thumbnails tinted by them

    def _sam_mask(self, obj: ObjectGuides) -> np.ndarray | None:
        """SAM 2's mask of the object's box/points, recomputed only when they changed; None while not ready."""
        if not obj.has_prompt:
            return np.zeros(self.rgb.shape[:2], dtype=bool)
        revision = self.state.prompt_revision(obj.id)
        cached = self._sam_masks.get(obj.id)
        if cached is not None and cached[0] == revision:
            return cached[1]
        if self._preview is None or not self.preview_ready:
            return None
        preview = self._preview.result() if isinstance(self._preview, Future) else self._preview
        mask = preview.mask(ObjectGuides(obj.id, box=obj.box, points=list(obj.points), labels=list(obj.labels)))
        self._sam_masks[obj.id] = (revision, mask)
        return mask

    def _object_ids(self) -> list[int]:
        """The IDs whose masks are drawn."""
        return self.state.ids()

    def _object(self, obj_id: int) -> ObjectGuides | None:
        """What `obj_id`'s mask is drawn from (None: nothing)."""
        return self.state.object(obj_id)

    def _shown_mask(self, obj: ObjectGuides, rect=None) -> np.ndarray:
        """The mask drawn for `obj` in `rect`: the conditioning mask with the preview on, the brush alone without it."""
        ys, xs = _slices(rect, self.rgb.shape)
        sam = self._sam_mask(obj) if self.preview_on else None
        if sam is None:
            sam = np.zeros(self.rgb.shape[:2], dtype=bool)
        part = ObjectGuides(
            obj.id,
            paint=obj.paint[ys, xs] if obj.paint is not None else None,
            erase=obj.erase[ys, xs] if obj.erase is not None else None,
        )
        return compose_mask(sam[ys, xs], part)

    def shown_mask(self, obj_id: int) -> np.ndarray:
        """(H, W) bool: where object `obj_id` is drawn (its conditioning mask with the preview on)."""
        obj = self._object(obj_id)
        return self._shown_mask(obj) if obj is not None else np.zeros(self.rgb.shape[:2], dtype=bool)

    def _refresh_masks(self, rect=None) -> None:
        """Recompose the masks over the image, in `rect` (x0, y0, x1, y1) only when given; redraw what changed."""
        ys, xs = _slices(rect, self.rgb.shape)
        image = self.rgb[ys, xs].astype(np.float32)
        shown = np.zeros(image.shape[:2], dtype=bool)
        tint = np.zeros_like(image)
        waiting = False
        for obj_id in self._object_ids():
            obj = self._object(obj_id)
            if obj is None:
                continue
            if self.preview_on and obj.has_prompt and self._sam_mask(obj) is None:
                waiting = self._preview is not None
            mask = self._shown_mask(obj, rect)
            tint[mask] = color_for(obj_id)
            shown |= mask
        image[shown] += MASK_ALPHA * (tint[shown] - image[shown])
        self._display[ys, xs, :3] = image.astype(np.uint8)
        self._update_view(rect)
        self._waiting = waiting
        self._update_status()

    # ----- the view: the visible part of the composite at screen resolution ----------------------
    def _fit_view(self) -> None:
        """Size the view for the image's visible part (after zoom, pan, resize); the image area is redrawn."""
        height, width = self.rgb.shape[:2]
        before = self.ax.bbox.frozen()
        self.ax.apply_aspect()  # the axes' box for these limits, as the next full draw places it
        (x0, x1), (y1, y0) = self.ax.get_xlim(), self.ax.get_ylim()
        box = (max(0, int(np.floor(x0 + 0.5))), max(0, int(np.floor(y0 + 0.5))),
               min(width, int(np.ceil(x1 + 0.5))), min(height, int(np.ceil(y1 + 0.5))))
        if box[2] <= box[0] or box[3] <= box[1]:
            self._view_box = None
            return
        pixels = self.ax.get_window_extent()
        scale = min(1.0, pixels.width / max(x1 - x0, 1), pixels.height / max(y1 - y0, 1))
        self._view_box, self._view_scale = box, scale
        size = (max(1, round((box[2] - box[0]) * scale)), max(1, round((box[3] - box[1]) * scale)))
        self._view = self._resample(box, 0, 0, *size, size)
        self.image_artist.set_extent((box[0] - 0.5, box[2] - 0.5, box[3] - 0.5, box[1] - 0.5))
        self.image_artist.set_data(self._view)
        self._invalidate(before, self.ax.bbox)

    def _update_view(self, rect=None) -> None:
        """Bring the view up to date with the composite in `rect` (image pixels; all when None).

        Only the view pixels that changed are redrawn on screen.
        """
        if self._view_box is None:
            self._fit_view()
            return
        bx0, by0, bx1, by1 = self._view_box
        rect = rect or self._view_box
        vh, vw = self._view.shape[:2]
        fx, fy = vw / (bx1 - bx0), vh / (by1 - by0)
        # View pixels the change touches.
        vx0, vy0 = max(0, int((rect[0] - bx0) * fx)), max(0, int((rect[1] - by0) * fy))
        vx1, vy1 = min(vw, int(np.ceil((rect[2] - bx0) * fx))), min(vh, int(np.ceil((rect[3] - by0) * fy)))
        if vx1 <= vx0 or vy1 <= vy0:
            return
        block = self._view[vy0:vy1, vx0:vx1]
        new = self._resample(self._view_box, vx0, vy0, vx1, vy1, (vw, vh))
        changed = (new != block).any(axis=-1)
        if not changed.any():
            return
        block[...] = new
        self.image_artist.set_data(self._view)
        rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
        self._invalidate(self._view_extent(vx0 + cols[0], vy0 + rows[0], vx0 + cols[-1] + 1, vy0 + rows[-1] + 1))

    def _resample(self, box, vx0, vy0, vx1, vy1, size) -> np.ndarray:
        """View pixels [vy0:vy1, vx0:vx1] of a (W, H) `size` view of the composite's `box`."""
        import cv2

        bx0, by0, bx1, by1 = box
        fx, fy = size[0] / (bx1 - bx0), size[1] / (by1 - by0)
        src = self._display[by0 + int(vy0 / fy): by0 + int(np.ceil(vy1 / fy)),
                            bx0 + int(vx0 / fx): bx0 + int(np.ceil(vx1 / fx))]
        if src.shape[:2] == (vy1 - vy0, vx1 - vx0):
            return src.copy()
        return cv2.resize(src, (vx1 - vx0, vy1 - vy0), interpolation=cv2.INTER_AREA)

    def _view_extent(self, vx0, vy0, vx1, vy1):
        """The screen rectangle where view pixels [vy0:vy1, vx0:vx1] are drawn, with the resampling's reach."""
        from matplotlib.transforms import Bbox

        bx0, by0, bx1, by1 = self._view_box
        vh, vw = self._view.shape[:2]
        sx, sy = (bx1 - bx0) / vw, (by1 - by0) / vh  # image pixels per view pixel
        # One view pixel more on each side: the resampling filter reaches that far.
        corners = [(bx0 - 0.5 + (vx0 - 1) * sx, by0 - 0.5 + (vy0 - 1) * sy),
                   (bx0 - 0.5 + (vx1 + 1) * sx, by0 - 0.5 + (vy1 + 1) * sy)]
        points = self.ax.transData.transform(corners)  # y flips: take the corners' min and max
        return Bbox.intersection(Bbox([points.min(axis=0), points.max(axis=0)]).padded(1), self.ax.bbox)

    # ----- zoom and pan: the image axes' limits, in image pixels ---------------------------------
    def zoom(self, factor: float, center: tuple[float, float] | None = None) -> None:
        """Zoom by `factor` (2: in, 0.5: out) onto `center` (image pixels; default: the view's centre)."""
        (x0, x1), (y1, y0) = self.ax.get_xlim(), self.ax.get_ylim()
        cx, cy = center if center is not None else ((x0 + x1) / 2, (y0 + y1) / 2)
        w, h = (x1 - x0) / factor, (y1 - y0) / factor
        self._set_view(cx - w / 2, cy - h / 2, w, h)

    def pan(self, dx: float, dy: float) -> None:
        """Move the view by `dx` of its width and `dy` of its height (positive: right, down)."""
        (x0, x1), (y1, y0) = self.ax.get_xlim(), self.ax.get_ylim()
        w, h = x1 - x0, y1 - y0
        self._set_view(x0 + dx * w, y0 + dy * h, w, h)

    def reset_view(self) -> None:
        """Show the whole image."""
        height, width = self.rgb.shape[:2]
        self._set_view(-0.5, -0.5, width, height)

    @property
    def zoom_factor(self) -> float:
        """How many times the view is magnified over the whole image (1: the whole image)."""
        x0, x1 = self.ax.get_xlim()
        return self.rgb.shape[1] / (x1 - x0)

    @_batched
    def _set_view(self, x0: float, y0: float, w: float, h: float) -> None:
        """Show the image region at (x0, y0) of size (w, h), with the whole image's aspect, inside the image."""
        height, width = self.rgb.shape[:2]
        # The whole image's aspect keeps the axes' box, so only the image area is redrawn.
        scale = min(max(w / width, h / height, MIN_VIEW / min(width, height)), 1.0)
        cx, cy = x0 + w / 2, y0 + h / 2
        w, h = width * scale, height * scale
        x0 = min(max(cx - w / 2, -0.5), width - 0.5 - w)
        y0 = min(max(cy - h / 2, -0.5), height - 0.5 - h)
        xlim, ylim = (x0, x0 + w), (y0 + h, y0)
        if np.allclose([*self.ax.get_xlim(), *self.ax.get_ylim()], [*xlim, *ylim]):
            return
        with self.ax.callbacks.blocked():  # one refit below, not one per limit
            self.ax.set_xlim(*xlim)
            self.ax.set_ylim(*ylim)
        self._fit_view()
        self._update_status()

    # ----- guides and sidebar -------------------------------------------------------------------
    @_batched
    def _redraw_guides(self) -> None:
        """Boxes and points of every object; only guides that appear, go or change are redrawn on screen."""
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
                self._invalidate_artist(artist)
            artists.append(artist)
        for gone in unchanged.values():
            for artist in gone:
                self._invalidate_artist(artist)
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
        return sorted(set(range(1, SLOTS + 1)) | set(self.session.guided_on) | set(self.state.ids())
                      | {self.state.current_id})

    def _sidebar_lines(self, obj_id: int) -> tuple[str, str]:
        """The two lines of an ID's sidebar slot."""
        name = self.session.classes.get(obj_id, "")
        count = self.session.guided_on.get(obj_id, 0) + (self.state.object(obj_id) is not None)
        return f"ID {obj_id}  {name}".rstrip(), f"on {count} reference(s)"

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
                first, second = self._sidebar_lines(obj_id)
                ax.text(0.17, y + 0.35 * h, first, color="white", fontsize=9, va="center",
                        weight="bold" if current else "normal")
                ax.text(0.17, y + 0.72 * h, second, color="#aaaaaa", fontsize=7, va="center")
                thumb = self._thumbnail(obj_id)
                if thumb is not None:
                    ax.imshow(thumb, extent=(0.72, 0.97, y + 0.92 * h, y + 0.08 * h), zorder=3)

        self._set_raster(self.side_artist, self.side, _raster(draw, self.fig, self.side))

    @property
    def slot_height(self) -> float:
        """Height of one sidebar slot, in sidebar axes units (0 at the top, 1 at the bottom)."""
        return min(0.1, 1.0 / len(self._slot_ids))

    def _thumbnail(self, obj_id: int) -> np.ndarray | None:
        """The object's last box (or mask) on this reference, else its thumbnail from an earlier one."""
        obj = self._object(obj_id)
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
        zoom = self.zoom_factor
        parts = [status, f"zoom {zoom:.3g}x" if zoom > 1.001 else "", "BRUSH" if self.brush else ""]
        self._set_text(self.status_text, "   ".join(p for p in parts if p))

    # ----- the pointer's marks: brush circle, rubber band, help ----------------------------------
    @_batched
    def _redraw_cursor(self) -> None:
        """The brush circle under the pointer while the brush is on; only its old and new places are redrawn."""
        xy = self._cursor_xy if self.brush else None
        radius = self.state.brush_radius
        if xy is None and not self.cursor.get_visible():
            return
        if xy is not None and self.cursor.get_visible() and tuple(self.cursor.center) == xy and (
                self.cursor.radius == radius):
            return
        self._invalidate_artist(self.cursor)
        if xy is not None:
            self.cursor.center = xy
            self.cursor.set_radius(radius)
        self.cursor.set_visible(xy is not None)
        self._invalidate_artist(self.cursor)

    @_batched
    def _show_rubber_band(self, bounds: tuple[float, float, float, float] | None) -> None:
        """The dashed box being dragged, (x, y, width, height) in image pixels; hidden for None."""
        self._invalidate_artist(self.rubber_band)
        if bounds is not None:
            self.rubber_band.set_bounds(*bounds)
        self.rubber_band.set_visible(bounds is not None)
        self._invalidate_artist(self.rubber_band)

    @_batched
    def _toggle_help(self) -> None:
        self._invalidate_artist(self.help_text)
        self.help_text.set_visible(not self.help_text.get_visible())
        self._invalidate_artist(self.help_text)

    # ----- partial redraws -----------------------------------------------------------------------
    def _invalidate(self, *boxes) -> None:
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
        if self._dirty and not self._batch_depth:
            self._request_repaint()

    def _invalidate_artist(self, artist) -> None:
        """Mark where `artist` is drawn now (nothing when hidden); of an unfilled rectangle, its edges alone."""
        from matplotlib.patches import Rectangle
        from matplotlib.text import Text
        from matplotlib.transforms import Bbox

        if not self._drawn or not artist.get_visible():
            return
        box = _extent(artist, self.fig.canvas.get_renderer())
        # Line width and antialiasing reach past the geometry; a text's background box further.
        pad = 10 if isinstance(artist, Text) else 2.5 + artist.get_linewidth() * self.fig.dpi / 72 / 2
        if isinstance(artist, Rectangle) and not artist.get_fill():
            x0, y0, x1, y1 = box.extents
            self._invalidate(*(Bbox.from_extents(*e) for e in [
                (x0 - pad, y0 - pad, x1 + pad, y0 + pad), (x0 - pad, y1 - pad, x1 + pad, y1 + pad),
                (x0 - pad, y0 - pad, x0 + pad, y1 + pad), (x1 - pad, y0 - pad, x1 + pad, y1 + pad)]))
        else:
            self._invalidate(box.padded(pad))

    @_batched
    def _set_text(self, artist, text: str) -> None:
        """Change a text (the title, the status line); only its old and new extents are redrawn."""
        if artist.get_text() == text:
            return
        self._invalidate_artist(artist)
        artist.set_text(text)
        self._invalidate_artist(artist)

    def _set_raster(self, artist, axes, raster: np.ndarray) -> None:
        """Show `raster` in `artist`, an image filling `axes`; only the part that changed is redrawn."""
        from matplotlib.transforms import Bbox

        old = self._rasters.get(id(artist))
        self._rasters[id(artist)] = raster
        artist.set_data(raster)
        if old is None or old.shape != raster.shape:
            self._invalidate(axes.bbox)
            return
        changed = (old != raster).any(axis=-1)
        if not changed.any():
            return
        rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
        b, (h, w) = axes.bbox, raster.shape[:2]
        self._invalidate(Bbox.from_extents(
            b.x0 + cols[0] * b.width / w, b.y1 - (rows[-1] + 1) * b.height / h,
            b.x0 + (cols[-1] + 1) * b.width / w, b.y1 - rows[0] * b.height / h).padded(2))

    def _request_repaint(self) -> None:
        if self._repaint_now:
            self._repaint()
        elif not self._repaint_pending:
            self._repaint_pending = True  # one repaint for all the changes of this turn of the event loop
            self._repaint_timer.start()

    def _repaint(self) -> None:
        """Redraw the dirty rectangles, each artist clipped to them, and send only them to the screen."""
        from matplotlib.transforms import Bbox

        self._repaint_pending = False
        boxes, self._dirty = _merge_boxes(self._dirty), []
        if not boxes or not self._drawn or self.done:
            return
        canvas = self.fig.canvas
        artists = _draw_order(self.fig)
        if artists is None:  # an axes with ticks and labels: not drawn in parts
            canvas.draw()
            return
        renderer = canvas.get_renderer()
        boxes = [Bbox.from_extents(*box) for box in boxes]
        for box in boxes:
            _paint(renderer, artists, box)
        for box in boxes:
            canvas.blit(box)

    def _on_draw(self, event) -> None:
        # A full draw (first show, resize, or anyone's draw_idle) has painted everything.
        self._drawn = True
        self._dirty = []

    # ----- event handlers: translate events into state changes ---------------------------------
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

    def on_key(self, event) -> None:
        key = event.key or ""
        if key in ("enter", "q"):
            self.accept()
        elif key == "escape":
            self.finish(None)
        elif key == "b":
            self.brush = not self.brush
            self._redraw_cursor()
            self._changed(guides=False, masks=False)
        elif key.isdigit() and key != "0":
            self.state.select(int(key))
            self._changed()
        elif key == "n":
            self.state.next_unused_id()
            self._changed()
        elif key == "d" and self._cursor_xy is not None:
            self._delete_nearest(*self._cursor_xy)
        elif key in ("u", "ctrl+z"):
            if self.state.undo():
                self._changed()
        elif key in ("U", "shift+u", "ctrl+y", "ctrl+Y"):
            if self.state.redo():
                self._changed()
        elif key == "r":
            self.state.clear()
            self._changed()
        elif key == "p":
            self.preview_on = not self.preview_on
            self._changed()
        elif key == "h":
            self._toggle_help()
        elif key in ("[", "]"):
            self._resize_brush(-2 if key == "[" else +2)
        elif key in ("+", "="):
            self.zoom(ZOOM_STEP, self._pointer(event))
        elif key == "-":
            self.zoom(1 / ZOOM_STEP)
        elif key == "0":
            self.reset_view()
        elif key in PAN_KEYS:
            self.pan(*PAN_KEYS[key])

    def _pointer(self, event) -> tuple[float, float] | None:
        """The pointer over the image (image pixels) at a key press, None when it is elsewhere."""
        xy = (event.xdata, event.ydata) if event.inaxes is self.ax and event.xdata is not None else self._cursor_xy
        height, width = self.rgb.shape[:2]
        if xy is None or not (-0.5 <= xy[0] <= width - 0.5 and -0.5 <= xy[1] <= height - 0.5):
            return None
        return xy

    @_batched
    def on_resize(self, event) -> None:
        # The view and the rasterised panels follow the window's size (a full draw follows).
        self._view_box = None
        self._fit_view()
        self._set_raster(self.controls_artist, self.controls, _text_raster(self.CONTROLS, self.fig, self.controls))
        self._redraw_sidebar()

    def on_close(self, event) -> None:
        if not self.done:
            self.accept(close=False)

    # ----- state changes ------------------------------------------------------------------------
    def _delete_nearest(self, x: float, y: float) -> None:
        # Within a tolerance that grows with the image, so a far-away click deletes nothing.
        if self.state.delete_nearest(x, y, max_distance=0.1 * max(self.rgb.shape[:2])):
            self._changed()

    def _resize_brush(self, step: int) -> None:
        self.state.brush_radius = self.state.brush_radius + step
        self._redraw_cursor()

    @_batched
    def _changed(self, rect=None, guides: bool = True, masks: bool = True) -> None:
        """Redraw after a state change: the masks (only `rect` when given), the guides and sidebar, the status.

        Each part redraws on screen only where its pixels changed.
        """
        if masks:
            self._refresh_masks(rect)
        if guides:
            self._redraw_guides()
        self._update_status()

    def accept(self, close: bool = True) -> None:
        height, width = self.rgb.shape[:2]
        self.finish(ReferenceGuides(self.image_path, width, height, self.state.guides()), close)

    def finish(self, result: ReferenceGuides | None, close: bool = True) -> None:
        """End this reference with `result` (None: skipped)."""
        if self.done:
            return
        self.done, self.result = True, result
        for timer in (self._timer, self._repaint_timer):
            if timer is not None:
                timer.stop()
        if self._on_done is not None:
            self._on_done()
        if close:
            import matplotlib.pyplot as plt

            plt.close(self.fig)


def object_thumbnail(rgb: np.ndarray, obj: ObjectGuides, mask: np.ndarray, size: int = 48) -> np.ndarray | None:
    """A small crop of the reference around the object's box, else its mask, tinted by the mask."""
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


def _draw_order(fig) -> list | None:
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


def _paint(renderer, artists: list, box) -> None:
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
            reach = _extent(artist, renderer).padded(12)
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


def _extent(artist, renderer):
    """Where `artist` draws, in display pixels, before line widths: its window extent, quickly for patches."""
    from matplotlib.patches import Patch
    from matplotlib.transforms import Bbox

    if isinstance(artist, Patch) and len(artist.get_path().vertices):
        # The box of the path's control points holds its curves, and skips matplotlib's exact (slow) extrema.
        points = artist.get_transform().transform(artist.get_path().vertices)
        return Bbox([points.min(axis=0), points.max(axis=0)])
    return artist.get_window_extent(renderer)


def _merge_boxes(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
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


def use_window_backend() -> None:
    """Pick an interactive backend (QtAgg where installed, else TkAgg) or explain why there is none."""
    import matplotlib

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError(
            "the SmartSelector needs a display, and DISPLAY is not set. Over SSH use `ssh -X`; "
            "from WSL or Docker start VcXsrv on Windows and set DISPLAY (e.g. host.docker.internal:0.0); "
            "on a server, rerun saved prompts with --headless"
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
                "(e.g. host.docker.internal:0.0); on a server, rerun saved prompts with --headless"
            )
    # The window's own keys (Q, P, R, S, …) must not trigger matplotlib's default shortcuts.
    for key in [k for k in matplotlib.rcParams if k.startswith("keymap.")]:
        matplotlib.rcParams[key] = []


def run_selector(
    references: list[Path],
    backend,
    classes: dict[int, str],
    prompts_path: Path,
    existing: PromptSet | None = None,
) -> PromptSet:
    """Open each reference in a SmartSelector window; save the prompts after every accepted one.

    `existing` (from `--edit`) pre-fills each reference's guides and keeps references not reopened.
    """
    use_window_backend()
    import matplotlib.pyplot as plt

    done = {r.image.resolve(): r for r in existing.references} if existing else {}
    order = [p.resolve() for p in references]
    classes = {**classes, **(existing.classes if existing else {})}
    session = SessionInfo(classes=classes)
    encoder = ThreadPoolExecutor(1, "embed")
    for i, path in enumerate(order):
        session.guided_on = _guided_counts(done, exclude=path)
        rgb = read_rgb(path)
        prior = done.get(path)
        state = GuideState(rgb.shape[1], rgb.shape[0], prior.objects if prior else ())
        state.taken = set(session.guided_on)
        fig = plt.figure(figsize=(13, 7.5))
        selector = SmartSelector(
            fig, path, rgb, encoder.submit(backend.preview, rgb), state, session,
            title=f"SmartSelector — {path.name} ({i + 1}/{len(order)})",
        )
        plt.show(block=True)
        if not selector.done:  # the window went away without a close event
            selector.accept(close=False)
        if selector.result is None:
            log.info("skipped %s", path.name)
            continue
        done[path] = selector.result
        prompts = PromptSet([done[p] for p in _ordered(done, order)], classes)
        if any(r.objects for r in prompts.references):
            save_prompts(prompts, prompts_path)
            log.info("saved %s (%d object(s) on %s)", prompts_path, len(selector.result.objects), path.name)
    encoder.shutdown(wait=False)
    return PromptSet([done[p] for p in _ordered(done, order) if done[p].objects], classes)


def _ordered(done: dict[Path, ReferenceGuides], order: list[Path]) -> list[Path]:
    """References in the order they were opened, then those kept from the prompts file."""
    return [p for p in order if p in done] + [p for p in done if p not in order]


def _guided_counts(done: dict[Path, ReferenceGuides], exclude: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for path, ref in done.items():
        if path != exclude:
            for obj in ref.objects:
                counts[obj.id] = counts.get(obj.id, 0) + 1
    return counts
