"""Brush responsiveness of the SmartSelector on a 1024x1024 reference: stroke events per second.

Each brush event is handled by the real SmartSelector (state change, overlay update of the dirty
rectangle), then its repaint runs: the screen rectangles the event changed are redrawn and blitted,
as a GUI backend does after every event (at worst; it coalesces events when drawing is slower). For
comparison, a full figure draw (first show, resize) is timed too. The pixels blitted per event are
what a remote X display (`ssh -X`) receives, 4 bytes each. Run: `python benchmarks/bench_brush.py`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common  # noqa: F401  (the repository root on sys.path)
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backend_bases import MouseEvent  # noqa: E402

from labeler.gui.selector import SmartSelector  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="reference width and height")
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--dpi", type=int, default=100, help="window of 13x7.5 inches at this dpi")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    fig = plt.figure(figsize=(13, 7.5), dpi=args.dpi)
    sel = SmartSelector(fig, Path("bench.png"), rgb, preview=None, title="SmartSelector — bench")
    canvas = fig.canvas
    canvas.draw()
    sel.on_key(type("E", (), {"key": "b"})())

    def send(name, x, y, button=None):
        sx, sy = sel.ax.transData.transform((x, y))
        ev = MouseEvent(name, canvas, sx, sy, button=button)
        canvas.callbacks.process(name, ev)

    t = np.linspace(0, 4 * np.pi, args.events)
    xs = args.size / 2 + 0.4 * args.size * np.cos(t) * np.linspace(1, 0.3, args.events)
    ys = args.size / 2 + 0.4 * args.size * np.sin(t) * np.linspace(1, 0.3, args.events)
    blitted = []
    canvas.blit = lambda bbox=None: blitted.append(bbox.width * bbox.height)  # Agg shows nothing: count
    send("button_press_event", xs[0], ys[0], 1)
    sel.repaint.repaint()
    blitted.clear()
    # A GUI backend repaints after the handler returns (a timer); here it is called and timed apart.
    sel.repaint.request = lambda: None
    handler = repaint = 0.0
    for x, y in zip(xs[1:], ys[1:]):
        t0 = time.perf_counter()
        send("motion_notify_event", x, y)
        t1 = time.perf_counter()
        sel.repaint.repaint()
        t2 = time.perf_counter()
        handler += t1 - t0
        repaint += t2 - t1
    send("button_release_event", xs[-1], ys[-1], 1)
    n = args.events - 1
    draws = 20
    t0 = time.perf_counter()
    for _ in range(draws):
        canvas.draw()
    full = (time.perf_counter() - t0) / draws
    per_event = (handler + repaint) / n
    print(f"reference {args.size}x{args.size}, window {13 * args.dpi}x{int(7.5 * args.dpi)} px, brush radius "
          f"{sel.state.brush_radius}, {n} stroke events")
    print(f"handler (state + overlay update): {1000 * handler / n:.2f} ms/event")
    print(f"repaint (changed rectangles):     {1000 * repaint / n:.2f} ms/event, "
          f"{sum(blitted) / n / 1000:.1f} kpixels blitted ({4 * sum(blitted) / n / 1000:.0f} KB to a remote display)")
    print(f"full figure draw (Agg, for comparison: first show, resize): {1000 * full:.2f} ms")
    print(f"stroke events per second, repainting every event: {1 / per_event:.1f}")
    print(f"stroke events per second, handler alone:          {n / handler:.0f}")

if __name__ == "__main__":
    main()
