"""The SmartSelector in a browser (`--web`): bytes over the websocket per action, and click-to-mask latency.

A WebHost serves one SmartSelector over a real photo (or a generated image where the photos are absent)
with SAM 2.1 tiny's live preview (untrained weights: the computation is the real one), and headless
Chromium (Debian's, driven by Playwright) is the person: it hovers with the brush off, draws boxes and
clicks points (each reruns SAM 2's prompt encoder and mask decoder), and paints brush strokes. Printed:
the bytes the page received per action, the first full frame and one PNG of the image area for
scale, and the time from a click's release until the frame with its mask has arrived (ms).
Untrained weights give noise masks over much of the image, so the guide-change frames here are a worst
case; a trained model's compact masks change fewer pixels.

Run: `python benchmarks/bench_web.py [--image-size 1024] [--clicks 8]`.
"""

from __future__ import annotations

import argparse
import io
import statistics
import threading
import time

import common  # noqa: F401  (the repository root on sys.path)
import numpy as np
from PIL import Image

from labeler.gui.hosts import OneWindow
from labeler.gui.hosts.web import WebHost
from labeler.gui.selector import SmartSelector
from labeler.models.backend import ModelSettings, build_backend
from labeler.utils.images import read_rgb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=1024, help="SAM 2's input size")
    ap.add_argument("--clicks", type=int, default=8, help="points clicked (each a SAM 2 preview)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    photo = common.REAL / "photos" / "truck.jpg"
    if photo.is_file():
        rgb = read_rgb(photo)
    else:
        photo, rgb = common.ROOT / "assets" / "demo" / "refs" / "ref1.jpg", None
        rgb = read_rgb(photo)
    backend = build_backend(ModelSettings("tiny", "none", args.image_size, "cpu"))
    preview = backend.preview(rgb)  # the embedding first: what is timed is the guide changes
    host = WebHost(port=0, announce=lambda line: None)
    host.open()
    windows = []

    def build(figure):
        windows.append(SmartSelector(figure, photo, rgb, preview, title=photo.name))
        return windows[0]

    threading.Thread(target=host.run, args=(OneWindow(build),), daemon=True).start()
    received: list[tuple[float, int, bool]] = []  # (time, bytes, a frame)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("websocket", lambda ws: ws.on("framereceived", lambda m: received.append(
            (time.perf_counter(), len(m) if isinstance(m, bytes) else len(m.encode()), isinstance(m, bytes)))))
        page.goto(host.url)
        page.wait_for_function("window.labelerFigure && window.labelerFigure.ws.readyState === 1")

        def settle(quiet=0.7):
            count, since = len(received), time.perf_counter()
            while time.perf_counter() - since < quiet:
                page.wait_for_timeout(50)
                if len(received) != count:
                    count, since = len(received), time.perf_counter()

        def frames():
            return sum(f for _, _, f in received)

        def wait_frame(after):
            while frames() <= after:
                page.wait_for_timeout(5)

        settle()
        window = windows[0]
        first_frame = next(n for _, n, f in received if f)
        left, top = (lambda b: (b["x"], b["y"]))(page.locator("canvas.mpl-canvas").bounding_box())

        def at(x, y):
            sx, sy = window.ax.transData.transform((x, y))
            return left + sx, top + 750 - sy

        b = window.ax.bbox
        pixels = host.call_soon(lambda: np.asarray(window.fig.canvas.get_renderer().buffer_rgba()).copy()).result()
        with io.BytesIO() as png:
            Image.fromarray(pixels[750 - int(b.y1):750 - int(b.y0), int(b.x0):int(b.x1)]).save(png, format="png")
            area_png = png.tell()
        h, w = rgb.shape[:2]

        start = len(received)  # hovering, the brush off
        for i in range(20):
            page.mouse.move(*at(w * (0.2 + 0.03 * i), h * 0.5))
        settle()
        hover = sum(n for _, n, _ in received[start:])

        latencies, change_bytes = [], []
        rng = np.random.default_rng(0)
        for i in range(args.clicks):  # a point each, alternating two IDs (each a SAM 2 preview)
            page.keyboard.press(str(1 + i % 2))
            settle(0.3)
            page.mouse.move(*at(*(rng.uniform(0.2, 0.8, 2) * (w, h))))
            page.mouse.down()
            before, n0 = len(received), frames()
            t0 = time.perf_counter()
            page.mouse.up()
            wait_frame(n0)
            latencies.append((time.perf_counter() - t0) * 1000)
            settle(0.3)
            change_bytes.append(sum(n for _, n, _ in received[before:]))

        page.keyboard.press("b")  # brush strokes
        settle(0.3)
        moves = []
        page.mouse.move(*at(w * 0.3, h * 0.3))
        page.mouse.down()
        for i in range(1, 31):
            before, n0 = len(received), frames()
            page.mouse.move(*at(w * (0.3 + 0.01 * i), h * (0.3 + 0.004 * i)))
            wait_frame(n0)
            page.wait_for_timeout(20)
            moves.append(sum(n for _, n, _ in received[before:]))
        page.mouse.up()
        settle()
        browser.close()
    host.close()
    median = statistics.median
    print(f"photo {photo.name} ({w}x{h}), SAM 2.1 tiny at {args.image_size} px (untrained), figure 1300x750")
    print(f"first full frame: {first_frame / 1e3:.0f} kB; one PNG of the image area: {area_png / 1e3:.0f} kB")
    print(f"hover with the brush off: {hover} B for 20 moves")
    print(f"brush move: median {median(moves) / 1e3:.1f} kB, max {max(moves) / 1e3:.1f} kB ({len(moves)} moves)")
    print(f"point + SAM 2 preview: median {median(change_bytes) / 1e3:.0f} kB, max {max(change_bytes) / 1e3:.0f} kB")
    print(f"click release to its mask's frame: median {median(latencies):.0f} ms, "
          f"min {min(latencies):.0f}, max {max(latencies):.0f} ({len(latencies)} clicks)")
    common.merge_results("web", {
        "image_size": args.image_size, "first_frame_bytes": first_frame, "image_area_png_bytes": area_png,
        "hover_bytes_20_moves": hover, "brush_move_bytes_median": median(moves), "brush_move_bytes_max": max(moves),
        "point_preview_bytes_median": median(change_bytes), "point_preview_bytes_max": max(change_bytes),
        "click_to_mask_ms_median": median(latencies), "click_to_mask_ms_max": max(latencies)})


if __name__ == "__main__":
    main()
