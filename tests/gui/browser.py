"""Driving the labeler's web page in a real browser: Debian's Chromium through Playwright.

Playwright's own browser download can't work here, so it drives `/usr/bin/chromium` (`executable_path`).
Without Playwright or Chromium a test skips saying which is missing, except in CI (CI set), where it fails.

Positions are the figure's display pixels, as matplotlib's events carry them (origin at the bottom left,
y up); `Page.to_page` turns them into the page's CSS pixels with the same arithmetic as matplotlib's
mpl.js, so the same events can be replayed on Agg (`agg_events`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 900}  # holds the 1300 x 750 figure


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


@contextlib.contextmanager
def chromium():
    """A headless Chromium; yields Playwright's Browser."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing('Playwright for Python is not installed (pip install -e ".[test]")')
    if not os.path.exists(CHROMIUM):
        _missing("no Chromium at /usr/bin/chromium (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])  # root in containers
        try:
            yield browser
        finally:
            browser.close()


class Page:
    """The labeler's page in a tab: opens `url`, counts what its websocket receives, sends the person's input.

    received: (kind, bytes) per websocket message received, kind "frame" (a PNG) or "json".
    events: what was sent, as matplotlib events (name, x, y, extra) for `agg_events` to replay.
    """

    def __init__(self, context, url: str):
        self.page = context.new_page()
        self.received: list[tuple[str, int]] = []
        self.json: list[str] = []
        self.events: list[tuple] = []
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._received))
        self.page.goto(url)
        self.page.wait_for_function("window.labelerFigure && window.labelerFigure.ws.readyState === 1")
        self.height = 750

    def _received(self, payload) -> None:
        if isinstance(payload, bytes):
            self.received.append(("frame", len(payload)))
        else:
            self.received.append(("json", len(payload.encode())))
            self.json.append(payload)

    # ----- waiting --------------------------------------------------------------------------------
    def wait(self, ms: int) -> None:
        self.page.wait_for_timeout(ms)

    def frames(self) -> int:
        return sum(kind == "frame" for kind, _ in self.received)

    def wait_for_frame(self, after: int, timeout: float = 20) -> None:
        """Until a frame beyond the first `after` has arrived."""
        deadline = time.monotonic() + timeout
        while self.frames() <= after:
            assert time.monotonic() < deadline, "no frame arrived"
            self.wait(10)

    def settle(self, quiet_ms: int = 400, timeout: float = 30) -> None:
        """Until no message has arrived for `quiet_ms`."""
        deadline = time.monotonic() + timeout
        count, since = len(self.received), time.monotonic()
        while time.monotonic() - since < quiet_ms / 1000:
            assert time.monotonic() < deadline, "the page never settled"
            self.wait(50)
            if len(self.received) != count:
                count, since = len(self.received), time.monotonic()

    def wait_for_title(self, text: str, timeout: float = 90) -> None:
        """Until the figure's window title (matplotlib's figure label) holds `text`."""
        self.page.wait_for_function(
            "t => (document.querySelector('.ui-dialog-title') || {}).textContent.includes(t)", arg=text,
            timeout=timeout * 1000)

    def status(self) -> str:
        return self.page.inner_text("#status")

    def log(self) -> str:
        return self.page.inner_text("#log")

    def bytes_since(self, start: int) -> int:
        return sum(n for _, n in self.received[start:])

    # ----- input ----------------------------------------------------------------------------------
    def origin(self) -> tuple[float, float]:
        box = self.page.locator("canvas.mpl-canvas").bounding_box()
        return box["x"], box["y"]

    def to_page(self, x: float, y: float) -> tuple[int, int]:
        """A figure display position (whole pixels) to the page's CSS pixels."""
        left, top = self.origin()
        return round(left + x), round(top + self.height - y)

    def _at(self, x, y) -> tuple[int, int, float, float]:
        """Page pixels, and the figure position mpl.js will report for them."""
        px, py = self.to_page(x, y)
        left, top = self.origin()
        return px, py, px - left, self.height - (py - top)

    def move(self, x, y, wait: bool = True) -> None:
        """The pointer to (x, y); `wait`: until the server answered with a frame (so no move is coalesced)."""
        px, py, fx, fy = self._at(x, y)
        before = self.frames()
        self.page.mouse.move(px, py)
        self.events.append(("motion_notify_event", fx, fy, {}))
        if wait:
            self.wait_for_frame(before)

    def press(self, button: str = "left") -> None:
        fx, fy = self.events[-1][1:3]
        self.page.mouse.down(button=button)
        self.events.append(("button_press_event", fx, fy, {"button": {"left": 1, "middle": 2, "right": 3}[button]}))

    def release(self, button: str = "left") -> None:
        fx, fy = self.events[-1][1:3]
        self.page.mouse.up(button=button)
        self.events.append(("button_release_event", fx, fy, {"button": {"left": 1, "middle": 2, "right": 3}[button]}))

    def click(self, x, y, button: str = "left") -> None:
        self.move(x, y, wait=False)
        self.press(button)
        self.release(button)

    def drag(self, points, button: str = "left") -> None:
        self.move(*points[0], wait=False)
        self.press(button)
        for p in points[1:]:
            self.move(*p)
        self.release(button)

    def wheel(self, up: bool = True) -> None:
        fx, fy = self.events[-1][1:3]
        self.page.mouse.wheel(0, -100 if up else 100)
        self.events.append(("scroll_event", fx, fy, {"step": 1 if up else -1}))

    def key(self, key: str, matplotlib_name: str | None = None) -> None:
        """Press `key` (Playwright's name); `matplotlib_name`: the key matplotlib reports (default: `key`)."""
        fx, fy = self.events[-1][1:3] if self.events else (None, None)
        self.page.keyboard.press(key)
        self.events.append(("key_press_event", fx, fy, {"key": matplotlib_name or key}))

    # ----- what the page shows ----------------------------------------------------------------------
    def pixels(self) -> np.ndarray:
        """(H, W, 4) uint8: the page's figure canvas, as drawn."""
        url = self.page.evaluate("() => document.querySelector('canvas.mpl-canvas').toDataURL('image/png')")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def agg_events(canvas, events) -> None:
    """Replay a page's `events` on a matplotlib canvas (Agg), as the WebAgg core would have delivered them."""
    from matplotlib.backend_bases import KeyEvent, MouseEvent

    for name, x, y, extra in events:
        if name == "key_press_event":
            KeyEvent(name, canvas, extra["key"], x, y)._process()
        elif name == "scroll_event":
            MouseEvent(name, canvas, x, y, step=extra["step"])._process()
        else:
            MouseEvent(name, canvas, x, y, button=extra.get("button"))._process()


class BurstyLink:
    """A TCP link to `port` that holds what the server sends and lets it through every `every` seconds, as a
    slow or busy network delivers frames in bunches (what the browser sends goes through at once).

    Usage: `with BurstyLink(server_port) as port:` then browse to 127.0.0.1:port.
    """

    def __init__(self, port: int, every: float = 0.3):
        self.target, self.every = port, every
        self._stop = threading.Event()

    def __enter__(self) -> int:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()
        return self._listener.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                browser, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(browser, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, browser, self.every), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, every: float) -> None:
        held, last = b"", time.monotonic()
        source.settimeout(0.02)
        try:
            while not self._stop.is_set():
                try:
                    data = source.recv(1 << 16)
                    if not data:
                        break
                    held += data
                except TimeoutError:
                    pass
                if held and time.monotonic() - last >= every:
                    sink.sendall(held)
                    held, last = b"", time.monotonic()
            if held:
                sink.sendall(held)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
