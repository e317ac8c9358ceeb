"""SmartSelector: draw guides on reference images in a matplotlib window, with SAM 2's mask shown live.

The window is a view of a `GuideState`; its event handlers only translate mouse and key events
into state changes, then redraw what changed (`draw_idle`, no blitting, so it works over X11
forwarding and VcXsrv). The reference's image embedding is computed on a background thread while
the window is already open; each guide change reruns only SAM 2's prompt encoder and mask decoder.

Usage: `prompts = run_selector(reference_paths, predictor, classes, Path("output/prompts.json"))`.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .colors import color_for
from .engine import ReferencePreview, compose_mask
from .errors import UsageError
from .guide_state import GuideState
from .images import read_rgb
from .prompts import ObjectGuides, PromptSet, ReferenceGuides, save_prompts

log = logging.getLogger(__name__)

CONTROLS = (
    "drag: box · click: + point · right-click: − point · B: brush (wheel, [ ]: size) · "
    "1–9, N: object ID · D/middle: delete · U/ctrl+z: undo · shift+U/ctrl+y: redo · R: clear · "
    "P: preview · Enter/Q: accept · Esc: skip · H: help"
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
Enter or Q           accept this reference and go on
Esc                  skip this reference
Closing the window   accepts it
H                    this help"""
MASK_ALPHA = 0.45  # mask opacity
DRAG_PIXELS = 5  # a press that moves less than this (screen pixels) is a click
SLOTS = 9  # sidebar slots always shown


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
    """

    def __init__(
        self,
        figure,
        image_path: Path,
        rgb: np.ndarray,
        preview: Future | ReferencePreview | None,
        state: GuideState | None = None,
        session: SessionInfo | None = None,
        title: str = "",
        on_done: Callable[[], None] | None = None,
    ):
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
        self._cursor_xy: tuple[float, float] | None = None
        self._on_done = on_done
        # The image with the masks composited in; RGBA, as matplotlib would otherwise add alpha on every draw.
        self._display = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        self._build(title)
        self._refresh_masks()
        self._redraw_guides()
        for name, handler in [
            ("button_press_event", self.on_press), ("button_release_event", self.on_release),
            ("motion_notify_event", self.on_motion), ("scroll_event", self.on_scroll),
            ("key_press_event", self.on_key), ("close_event", self.on_close),
            ("resize_event", self.on_resize),
        ]:
            figure.canvas.mpl_connect(name, handler)
        if not self.preview_ready:
            self._timer = figure.canvas.new_timer(interval=150)
            self._timer.add_callback(self._poll_preview)
            self._timer.start()

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
        self.ax.callbacks.connect("xlim_changed", lambda ax: self._update_view())
        self.ax.callbacks.connect("ylim_changed", lambda ax: self._update_view())
        self.side = fig.add_axes((0.80, 0.07, 0.195, 0.88))
        self.side.set_axis_off()
        # Text is the costliest thing to draw; the sidebar and the controls line change rarely,
        # so they are rasterised offscreen once per change and drawn as images.
        self.side_artist = self.side.imshow(np.zeros((2, 2, 3), np.uint8), extent=(0, 1, 1, 0), aspect="auto",
                                            interpolation="nearest")
        self.controls = fig.add_axes((0.005, 0.0, 0.99, 0.06))
        self.controls.set_axis_off()
        self.controls_artist = self.controls.imshow(_text_raster(CONTROLS, fig, self.controls), aspect="auto",
                                                    interpolation="nearest")
        self.title_text = fig.text(0.005, 0.985, title, color="white", va="top", fontsize=11, weight="bold")
        self.status_text = fig.text(0.995, 0.985, "", color="#f0c040", va="top", ha="right", fontsize=10)
        self.help_text = self.ax.text(
            0.5, 0.5, HELP, transform=self.ax.transAxes, ha="center", va="center", family="monospace",
            fontsize=9, color="white", bbox={"facecolor": "black", "alpha": 0.85}, visible=False, zorder=10,
        )
        self.rubber_band = Rectangle((0, 0), 0, 0, fill=False, linestyle="--", linewidth=1.5, visible=False)
        self.ax.add_patch(self.rubber_band)
        self.cursor = Circle((0, 0), self.state.brush_radius, fill=False, color="white", linewidth=1, visible=False)
        self.ax.add_patch(self.cursor)
        self._guide_artists: list = []

    # ----- preview ----------------------------------------------------------------------------
    @property
    def preview_ready(self) -> bool:
        return self._preview is None or isinstance(self._preview, ReferencePreview) or self._preview.done()

    def wait_for_preview(self) -> None:
        """Block until the image embedding is ready, then show the masks (tests and scripts)."""
        if isinstance(self._preview, Future):
            self._preview.result()
        self._poll_preview()

    def _poll_preview(self) -> None:
        if not self.preview_ready:
            return
        if getattr(self, "_timer", None) is not None:
            self._timer.stop()
            self._timer = None
        self._refresh_masks()
        self.fig.canvas.draw_idle()

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
        preview = self._preview if isinstance(self._preview, ReferencePreview) else self._preview.result()
        mask = preview.mask(ObjectGuides(obj.id, box=obj.box, points=list(obj.points), labels=list(obj.labels)))
        self._sam_masks[obj.id] = (revision, mask)
        return mask

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
        obj = self.state.object(obj_id)
        return self._shown_mask(obj) if obj is not None else np.zeros(self.rgb.shape[:2], dtype=bool)

    def _refresh_masks(self, rect=None) -> None:
        """Recompose the masks over the image, in `rect` (x0, y0, x1, y1) only when given."""
        ys, xs = _slices(rect, self.rgb.shape)
        image = self.rgb[ys, xs].astype(np.float32)
        shown = np.zeros(image.shape[:2], dtype=bool)
        tint = np.zeros_like(image)
        waiting = False
        for obj_id in self.state.ids():
            obj = self.state.object(obj_id)
            if self.preview_on and obj.has_prompt and self._sam_mask(obj) is None:
                waiting = self._preview is not None
            mask = self._shown_mask(obj, rect)
            tint[mask] = color_for(obj_id)
            shown |= mask
        image[shown] += MASK_ALPHA * (tint[shown] - image[shown])
        self._display[ys, xs, :3] = image.astype(np.uint8)
        self._update_view(rect)
        if not self.preview_on:
            status = "preview off"
        elif waiting:
            status = "computing SAM 2 image embedding…"
        else:
            status = ""
        self.status_text.set_text(status + ("   BRUSH" if self.brush else ""))

    def _update_view(self, rect=None) -> None:
        """Show the visible part of the composite at screen resolution; only `rect`'s part when given."""
        import cv2

        height, width = self.rgb.shape[:2]
        if rect is None or self._view_box is None:
            (x0, x1), (y1, y0) = self.ax.get_xlim(), self.ax.get_ylim()
            box = (max(0, int(np.floor(x0 + 0.5))), max(0, int(np.floor(y0 + 0.5))),
                   min(width, int(np.ceil(x1 + 0.5))), min(height, int(np.ceil(y1 + 0.5))))
            if box[2] <= box[0] or box[3] <= box[1]:
                return
            pixels = self.ax.get_window_extent()
            scale = min(1.0, pixels.width / max(x1 - x0, 1), pixels.height / max(y1 - y0, 1))
            self._view_box, self._view_scale = box, scale
            rect = box
            size = (max(1, round((box[2] - box[0]) * scale)), max(1, round((box[3] - box[1]) * scale)))
            self._view = np.zeros((size[1], size[0], 4), dtype=np.uint8)
            self.image_artist.set_extent((box[0] - 0.5, box[2] - 0.5, box[3] - 0.5, box[1] - 0.5))
        bx0, by0, bx1, by1 = self._view_box
        vh, vw = self._view.shape[:2]
        fx, fy = vw / (bx1 - bx0), vh / (by1 - by0)
        # View pixels the change touches, and the source block they cover.
        vx0, vy0 = max(0, int((rect[0] - bx0) * fx)), max(0, int((rect[1] - by0) * fy))
        vx1, vy1 = min(vw, int(np.ceil((rect[2] - bx0) * fx))), min(vh, int(np.ceil((rect[3] - by0) * fy)))
        if vx1 > vx0 and vy1 > vy0:
            src = self._display[by0 + int(vy0 / fy): by0 + int(np.ceil(vy1 / fy)),
                                bx0 + int(vx0 / fx): bx0 + int(np.ceil(vx1 / fx))]
            self._view[vy0:vy1, vx0:vx1] = src if src.shape[:2] == (vy1 - vy0, vx1 - vx0) else cv2.resize(
                src, (vx1 - vx0, vy1 - vy0), interpolation=cv2.INTER_AREA)
        self.image_artist.set_data(self._view)

    # ----- guides and sidebar -------------------------------------------------------------------
    def _redraw_guides(self) -> None:
        from matplotlib.patches import Rectangle

        for artist in self._guide_artists:
            artist.remove()
        self._guide_artists = []
        for obj_id in self.state.ids():
            obj = self.state.object(obj_id)
            color = np.array(color_for(obj_id)) / 255
            width = 2.5 if obj_id == self.state.current_id else 1.2
            if obj.box is not None:
                x0, y0, x1, y1 = obj.box
                rect = Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=width)
                self._guide_artists.append(self.ax.add_patch(rect))
            for (x, y), label in zip(obj.points, obj.labels):
                marker = dict(marker="o", markerfacecolor=color) if label else dict(marker="X", markerfacecolor="red")
                (line,) = self.ax.plot([x], [y], linestyle="none", markersize=9, markeredgecolor="white", **marker)
                self._guide_artists.append(line)
        self.rubber_band.set_edgecolor(np.array(color_for(self.state.current_id)) / 255)
        self._redraw_sidebar()

    def _redraw_sidebar(self) -> None:
        """Rasterise the sidebar: per ID its colour, class name, on how many references, a thumbnail."""
        from matplotlib.patches import Rectangle

        ids = sorted(set(range(1, SLOTS + 1)) | set(self.session.guided_on) | set(self.state.ids())
                     | {self.state.current_id})
        self._slot_ids = ids
        h = self.slot_height
        here = set(self.state.ids())

        def draw(ax):
            for row, obj_id in enumerate(ids):
                y = row * h
                current = obj_id == self.state.current_id
                if current:
                    ax.add_patch(Rectangle((0, y), 1, h, facecolor="#404040", edgecolor="white", linewidth=1))
                ax.add_patch(Rectangle((0.03, y + 0.15 * h), 0.1, 0.7 * h, color=np.array(color_for(obj_id)) / 255))
                name = self.session.classes.get(obj_id, "")
                count = self.session.guided_on.get(obj_id, 0) + (obj_id in here)
                ax.text(0.17, y + 0.35 * h, f"ID {obj_id}  {name}".rstrip(), color="white", fontsize=9,
                        va="center", weight="bold" if current else "normal")
                ax.text(0.17, y + 0.72 * h, f"on {count} reference(s)", color="#aaaaaa", fontsize=7, va="center")
                thumb = self._thumbnail(obj_id)
                if thumb is not None:
                    ax.imshow(thumb, extent=(0.72, 0.97, y + 0.92 * h, y + 0.08 * h), zorder=3)

        self.side_artist.set_data(_raster(draw, self.fig, self.side))

    @property
    def slot_height(self) -> float:
        """Height of one sidebar slot, in sidebar axes units (0 at the top, 1 at the bottom)."""
        return min(0.1, 1.0 / len(self._slot_ids))

    def _thumbnail(self, obj_id: int) -> np.ndarray | None:
        """The object's last box (or mask) on this reference, else its thumbnail from an earlier one."""
        obj = self.state.object(obj_id)
        if obj is None:
            return self.session.thumbnails.get(obj_id)
        thumb = object_thumbnail(self.rgb, obj, self._shown_mask(obj))
        if thumb is not None:
            self.session.thumbnails[obj_id] = thumb
        return thumb

    # ----- event handlers: translate events into state changes ---------------------------------
    def on_press(self, event) -> None:
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
        if event.inaxes is not self.ax or event.xdata is None:
            self.cursor.set_visible(False)
            return
        x, y = event.xdata, event.ydata
        self._cursor_xy = (x, y)
        if self.brush:
            self.cursor.center = (x, y)
            self.cursor.set_radius(self.state.brush_radius)
            self.cursor.set_visible(True)
        if self._stroking:
            self._changed(self.state.extend_stroke(x, y), guides=False)
        elif self._press is not None:
            x0, y0 = self._press[:2]
            self.rubber_band.set_bounds(min(x0, x), min(y0, y), abs(x - x0), abs(y - y0))
            self.rubber_band.set_visible(True)
            self.fig.canvas.draw_idle()
        elif self.brush:
            self.fig.canvas.draw_idle()

    def on_release(self, event) -> None:
        if self._stroking:
            self._stroking = False
            self.state.end_stroke()
            self._changed()
            return
        if self._press is None:
            return
        x0, y0, sx, sy = self._press
        self._press = None
        self.rubber_band.set_visible(False)
        x, y = (event.xdata, event.ydata) if event.inaxes is self.ax and event.xdata is not None else (x0, y0)
        if abs(event.x - sx) > DRAG_PIXELS or abs(event.y - sy) > DRAG_PIXELS:
            self.state.set_box(x0, y0, x, y)
        else:
            self.state.add_point(x0, y0, 1)
        self._changed()

    def on_scroll(self, event) -> None:
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
            self.cursor.set_visible(self.brush and self._cursor_xy is not None)
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
            self.help_text.set_visible(not self.help_text.get_visible())
            self.fig.canvas.draw_idle()
        elif key in ("[", "]"):
            self._resize_brush(-2 if key == "[" else +2)

    def on_resize(self, event) -> None:
        # The view and the rasterised panels follow the window's size.
        self._view_box = None
        self._update_view()
        self.controls_artist.set_data(_text_raster(CONTROLS, self.fig, self.controls))
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
        self.cursor.set_radius(self.state.brush_radius)
        self.fig.canvas.draw_idle()

    def _changed(self, rect=None, guides: bool = True, masks: bool = True) -> None:
        """Redraw after a state change: the masks (only `rect` when given), the guides and sidebar."""
        if masks:
            self._refresh_masks(rect)
        if guides:
            self._redraw_guides()
        self.fig.canvas.draw_idle()

    def accept(self, close: bool = True) -> None:
        height, width = self.rgb.shape[:2]
        self.finish(ReferenceGuides(self.image_path, width, height, self.state.guides()), close)

    def finish(self, result: ReferenceGuides | None, close: bool = True) -> None:
        """End this reference with `result` (None: skipped)."""
        if self.done:
            return
        self.done, self.result = True, result
        if getattr(self, "_timer", None) is not None:
            self._timer.stop()
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
    predictor,
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
            fig, path, rgb, encoder.submit(ReferencePreview, predictor, rgb), state, session,
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
