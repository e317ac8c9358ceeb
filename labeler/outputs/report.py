"""The review sheet `report.png`: how the batch went, at a glance.

Top: per object ID, on how many labeled targets it was found (bars), and the scores of the objects
found (histogram, one bar colour per ID). Below: the targets' overlays, the target whose lowest
object score is lowest first - those most likely to need a look. A target on which no object was
found counts as score 0, so it comes first (a miss is what a review should catch). At most
MAX_SHOWN (48) thumbnails; the sheet says how many of how many are shown. Where the folder holds a
quality.json (`python main.py quality`), its summary lines are a panel under the thumbnails; without
one the sheet is what it always was.

Built after the batch from the output folder (manifest records, overlays/<stem>.jpg read one at a
time), drawn with matplotlib's Agg canvas: no pyplot, no GUI backend. The sheet is SHEET_WIDTH
pixels wide and `sheet_size(n)` high for n thumbnails.

Usage: `write_report(Path("out"), targets, {1: "disc"}, [1, 2])` -> out/report.png
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..types.guides import class_name
from ..utils.colors import color_for
from ..utils.files import atomic_write_bytes
from ..utils.images import open_image
from .folder import OutputFolder, TargetRecord, all_object_ids

MAX_SHOWN = 48
DPI = 100
COLUMNS = 8
CELL_W, CELL_H = 200, 186  # pixels per thumbnail cell: image box plus a two-line caption
THUMB_W, THUMB_H = 190, 142
SHEET_WIDTH = COLUMNS * CELL_W
TITLE_H, PANEL_H, BOTTOM = 56, 310, 10
CAPTION_IDS = 4  # scores shown per caption (the lowest ones); the rest as "+n"


def min_score(item: TargetRecord) -> float:
    """The lowest score among the target's present objects; 0 when no object was found on it."""
    scores = [s for _, s in item.present]
    return min(scores) if scores else 0.0


def review_order(items: list[TargetRecord], limit: int = MAX_SHOWN) -> list[TargetRecord]:
    """The targets to show, lowest `min_score` first (ties keep the target order), at most `limit`."""
    return sorted(items, key=min_score)[:limit]


QUALITY_LINE_H = 17  # pixels per line of the quality panel


def sheet_size(shown: int, quality_lines: int = 0) -> tuple[int, int]:
    """(width, height) in pixels of a sheet with `shown` thumbnails (and a quality panel of that many lines)."""
    rows = math.ceil(shown / COLUMNS)
    panel = (30 + quality_lines * QUALITY_LINE_H) if quality_lines else 0
    return SHEET_WIDTH, TITLE_H + PANEL_H + rows * CELL_H + panel + BOTTOM


def read_quality_lines(folder: OutputFolder) -> list[str]:
    """The summary lines of the folder's quality.json; none when it has none (or it can't be read)."""
    import json

    try:
        lines = json.loads(folder.quality_json.read_text(encoding="utf-8")).get("summary", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [str(line) for line in lines] if isinstance(lines, list) else []


def _thumbnail(path: Path) -> np.ndarray | None:
    """The overlay scaled to fit THUMB_W x THUMB_H (JPEG decoded at reduced size where it can be)."""
    if not path.is_file():
        return None
    try:
        with open_image(path) as img:
            img.draft("RGB", (THUMB_W * 2, THUMB_H * 2))
            img = img.convert("RGB")
            img.thumbnail((THUMB_W, THUMB_H), Image.Resampling.LANCZOS)
            return np.asarray(img)
    except OSError:
        return None


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n // 2 - 1] + "…" + text[-(n - n // 2):]


def _caption(item: TargetRecord) -> str:
    present = sorted(item.present, key=lambda p: p[1])
    if not present:
        scores = "nothing found"
    else:
        scores = "  ".join(f"{k}:{s:.3f}" for k, s in present[:CAPTION_IDS])
        if len(present) > CAPTION_IDS:
            scores += f"  +{len(present) - CAPTION_IDS}"
    return f"{_shorten(item.path.name, 34)}\n{scores}"


def _rgb(obj_id: int) -> tuple[float, float, float]:
    return tuple(c / 255 for c in color_for(obj_id))


def _panel(fig, items: list[TargetRecord], classes: dict[int, str], object_ids: list[int], height: int) -> None:
    """Bar chart of present counts per ID (left) and grouped histogram of present scores per ID (right)."""
    from matplotlib.ticker import MaxNLocator

    top = 1 - TITLE_H / height
    bottom = 1 - (TITLE_H + PANEL_H - 60) / height
    ax_h = top - bottom - 30 / height
    names = [f"ID {k}\n{_shorten(class_name(classes, k), 14)}" for k in object_ids]
    colors = [_rgb(k) for k in object_ids]
    counts = [sum(1 for it in items if any(k == j for j, _ in it.present)) for k in object_ids]

    bars = fig.add_axes((70 / SHEET_WIDTH, bottom, 620 / SHEET_WIDTH, ax_h))
    x = np.arange(len(object_ids))
    bars.bar(x, counts, color=colors, edgecolor="black", linewidth=0.5)
    for xi, c in zip(x, counts):
        bars.annotate(f"{c}/{len(items)}", (xi, c), xytext=(0, 2), textcoords="offset points",
                      ha="center", va="bottom", fontsize=8)
    bars.set_xticks(x, names, fontsize=8)
    bars.set_ylim(0, max(1, len(items)) * 1.15)
    bars.set_ylabel("targets")
    bars.yaxis.set_major_locator(MaxNLocator(integer=True))
    bars.set_title("found on how many labeled targets, per object ID", fontsize=10)
    bars.spines[["top", "right"]].set_visible(False)

    hist = fig.add_axes((830 / SHEET_WIDTH, bottom, 720 / SHEET_WIDTH, ax_h))
    data = [[s for it in items for j, s in it.present if j == k] for k in object_ids]
    bins = np.linspace(0.0, 1.0, 21)
    if any(data):
        hist.hist(data, bins=bins, color=colors, edgecolor="black", linewidth=0.3,
                  label=[f"ID {k} {class_name(classes, k)} ({len(d)})" for k, d in zip(object_ids, data)])
        hist.legend(fontsize=7, loc="best", frameon=False, ncols=2 if len(object_ids) > 6 else 1)
    else:
        hist.text(0.5, 0.5, "no object found on any target", ha="center", va="center",
                  transform=hist.transAxes, color="0.4")
    hist.set_xlim(0, 1)
    hist.set_xlabel("object score (sigmoid of the object-score logit)", fontsize=8)
    hist.set_ylabel("objects")
    hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    hist.set_title("scores of the objects found, per ID", fontsize=10)
    hist.tick_params(labelsize=8)
    hist.spines[["top", "right"]].set_visible(False)


def render_report(output_dir: str | os.PathLike, items: list[TargetRecord], classes: dict[int, str],
                  object_ids: list[int], total: int, failed: int, limit: int = MAX_SHOWN,
                  quality_lines: list[str] = ()) -> bytes:
    """The sheet as PNG bytes; `quality_lines`: the audit's summary, a panel under the thumbnails."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = OutputFolder(output_dir)
    shown = review_order(items, limit)
    width, height = sheet_size(len(shown), len(quality_lines))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    title = f"Review sheet: {len(items)} of {total} targets labeled"
    if failed:
        title += f", {failed} failed (see results.csv)"
    fig.text(0.5, 1 - 22 / height, title, ha="center", va="center", fontsize=14, weight="bold")
    order = (f"showing {len(shown)}, lowest object score first" if len(shown) == len(items)
             else f"showing the {len(shown)} with the lowest object scores, lowest first")
    # No output folder path on the sheet: it depends only on the outputs, so a resumed run's is byte-identical.
    fig.text(0.5, 1 - 44 / height, f"{order}; a target with nothing found counts as 0",
             ha="center", va="center", fontsize=9, color="0.3")
    _panel(fig, items, classes, object_ids, height)

    grid_top = TITLE_H + PANEL_H  # pixels from the top
    for n, item in enumerate(shown):
        row, col = divmod(n, COLUMNS)
        x0, y0 = col * CELL_W, grid_top + row * CELL_H  # cell's top-left, from the top
        thumb = _thumbnail(folder.overlay(item.stem))
        if thumb is None:
            thumb = np.full((THUMB_H, THUMB_W, 3), 200, dtype=np.uint8)
            fig.text((x0 + CELL_W / 2) / width, 1 - (y0 + THUMB_H / 2) / height, "no overlay",
                     ha="center", va="center", fontsize=8, color="0.3")
        th, tw = thumb.shape[:2]
        # figimage places pixels 1:1, its offset counted from the figure's bottom-left corner.
        image_bottom = y0 + 4 + (THUMB_H + th) // 2  # centred in its box, pixels from the top
        fig.figimage(thumb, xo=x0 + (CELL_W - tw) // 2, yo=height - image_bottom, zorder=1)
        # The caption right under the image; red where nothing was found.
        fig.text((x0 + CELL_W / 2) / width, 1 - (image_bottom + 4) / height, _caption(item), ha="center",
                 va="top", fontsize=7.5, linespacing=1.3, color="black" if item.present else "#b00000")
    if quality_lines:
        top = grid_top + math.ceil(len(shown) / COLUMNS) * CELL_H + 8
        fig.text(20 / width, 1 - top / height, "quality of the labels, from the audit (quality.json):", ha="left",
                 va="top", fontsize=10, weight="bold")
        for i, line in enumerate(quality_lines):
            fig.text(20 / width, 1 - (top + 22 + i * QUALITY_LINE_H) / height, _shorten(line, 250), ha="left",
                     va="top", fontsize=8, color="0.15")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def write_report(output_dir: str | os.PathLike, targets: list[Path], classes: dict[int, str],
                 object_ids: list[int] | None = None, limit: int = MAX_SHOWN) -> Path:
    """Write output_dir/report.png for the targets the manifest records as labeled."""
    folder = OutputFolder(output_dir)
    manifest = folder.manifest()
    items = manifest.labeled(targets)
    failed = sum(r.status == "failed" for r in manifest.records(targets))
    ids = all_object_ids(items, object_ids)
    lines = read_quality_lines(folder)
    atomic_write_bytes(folder.report_png, render_report(folder.root, items, classes, ids, len(targets), failed, limit,
                                                        lines))
    return folder.report_png
