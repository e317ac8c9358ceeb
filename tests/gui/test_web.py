"""The windows in a real browser (`--web`): Debian's Chromium, driven by Playwright, on the labeler's own Tornado
application over matplotlib's WebAgg core. Nothing is mocked at the browser.

In-process tests run a `WebHost` on a free port with one window; the command-line tests run `python main.py
--web` and `python main.py review --web` as a user would, reading the URL from the line they print.
The browser harness is `browser.py`; without Playwright or Chromium these tests skip, except in CI.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser import VIEWPORT, BurstyLink, Page, agg_events, chromium
from helpers import ROOT
from PIL import Image

from labeler.gui.hosts import OneWindow
from labeler.gui.selector import SmartSelector
from labeler.utils.images import read_rgb

REFS = ROOT / "assets" / "demo" / "refs"
REFERENCE = sorted(REFS.iterdir())[0]


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport=VIEWPORT)
    yield context
    context.close()


@contextlib.contextmanager
def serving(preview=None, image: Path = REFERENCE):
    """A WebHost on a free port showing one SmartSelector over `image`; yields (host, windows)."""
    from labeler.gui.hosts.web import WebHost

    lines: list[str] = []
    host = WebHost(port=0, announce=lines.append)
    host.open()
    assert len(lines) == 1 and host.url in lines[0]
    windows: list[SmartSelector] = []

    def build(figure):
        windows.append(SmartSelector(figure, image, read_rgb(image), preview, title=f"SmartSelector — {image.name}"))
        return windows[-1]

    thread = threading.Thread(target=host.run, args=(OneWindow(build),), daemon=True)
    thread.start()
    try:
        yield host, windows
    finally:
        host.close()
        thread.join(10)


@contextlib.contextmanager
def in_page(context, preview=None):
    """`serving` with the page open in a tab, the window shown and its frames settled; yields (host, window, page)."""
    with serving(preview) as (host, windows):
        page = Page(context, host.url)
        page.wait_for_title("SmartSelector")
        converges(page, host)
        yield host, windows[0], page


def server_pixels(host) -> np.ndarray:
    """(H, W, 4): the figure's buffer on the server, read on its thread."""
    return host.call_soon(lambda: np.asarray(host.figure.canvas.get_renderer().buffer_rgba()).copy()).result(10)


def on_server(host, fn):
    return host.call_soon(fn).result(10)


def eventually(host, fn, expected, timeout: float = 10):
    """Until `fn()`, read on the server's thread, equals `expected` (the browser's events are on their way)."""
    deadline = time.monotonic() + timeout
    while (value := on_server(host, fn)) != expected:
        assert time.monotonic() < deadline, f"{value!r} != {expected!r}"
        time.sleep(0.02)


def converges(page: Page, host, timeout: float = 30) -> None:
    """Once the server has handled every event and its frames have arrived and settled, the page's canvas
    equals the server's buffer pixel for pixel (on a loaded machine a repaint can take a while)."""
    deadline = time.monotonic() + timeout
    while True:
        on_server(host, lambda: None)  # behind every event that has arrived
        page.settle()
        shown, server = page.pixels(), server_pixels(host)
        if np.array_equal(shown, server):
            return
        assert time.monotonic() < deadline, f"{(shown != server).any(axis=2).sum()} pixels differ"


def image_point(window, x, y) -> tuple[int, int]:
    """An image pixel's figure display position, in whole pixels."""
    sx, sy = window.ax.transData.transform((x, y))
    return int(round(sx)), int(round(sy))


# ----- who gets in ----------------------------------------------------------------------------------
def _status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _websocket_status(port: int, headers: dict) -> int:
    """The answer to a websocket handshake on /ws (101: opened)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    path = headers.pop("path", "/ws")
    connection.request("GET", path, headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                             "Sec-WebSocket-Version": "13", **headers})
    status = connection.getresponse().status
    connection.close()
    return status


def test_nobody_gets_in_without_the_token(context):
    with serving() as (host, _):
        base, token = host.url.split("/?token=")
        port = host.port
        cookie = {"Cookie": f"{host.cookie}={token}"}
        # The page, the script, matplotlib's files and the websocket: refused without the token or with a wrong one.
        for path in ("/", "/mpl.js", "/_static/css/mpl.css", "/_static/js/mpl.js"):
            assert _status(base + path) == 403, path
            assert _status(base + path, {"Cookie": f"{host.cookie}=wrong"}) == 403, path
            assert _status(f"{base}{path}?token=x{token}") == 403, path
            assert _status(base + path, cookie) == 200, path
        assert _websocket_status(port, {}) == 403
        assert _websocket_status(port, {"Cookie": f"{host.cookie}=nope"}) == 403
        assert _websocket_status(port, {**cookie, "Origin": "http://evil.example"}) == 403  # a foreign Origin
        assert _websocket_status(port, {**cookie, "Origin": f"http://127.0.0.1:{port}"}) == 101
        assert _websocket_status(port, {"path": f"/ws?token={token}"}) == 101  # a script with the token, no Origin
        # Only the page, mpl.js and matplotlib's css/ and js/ files: no other path, no listing.
        for path in ("/_static/", "/_static/css/", "/_static/single_figure.html", "/_static/../backend_webagg.py",
                     "/_static/css/../../backend_webagg_core.py", "/_static/js%2F..%2F..%2Fbackend_webagg.py",
                     "/_images/home.png", "/favicon.ico", "/1/download.png", "/etc/passwd"):
            assert _status(base + path, cookie) in (403, 404), path
        # The first visit turns the token into a cookie and takes it out of the address bar.
        page = context.new_page()
        response = page.goto(base + "/")
        assert response.status == 403 and "token" in page.inner_text("body")
        page.goto(host.url)
        assert page.url == base + "/"
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies[host.cookie]["value"] == token and cookies[host.cookie]["httpOnly"]
        page.wait_for_function("window.labelerFigure && window.labelerFigure.ws.readyState === 1")


def test_a_busy_port_gets_one_message_naming_it_and_other_addresses_a_warning(caplog):
    from labeler.errors import UsageError
    from labeler.gui.hosts.web import WebHost

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=rf"--web-port {port}: can't serve on 127.0.0.1:{port}"):
            WebHost(port=port, announce=lambda line: None).open()
    host = WebHost("0.0.0.0", 0, announce=lambda line: None)
    host.open()
    try:
        assert any("anyone who can reach port" in r.getMessage() for r in caplog.records)
        assert host.url.startswith(f"http://{socket.gethostname()}:{host.port}/?token=")
    finally:
        host.close()


# ----- drawing for a browser ------------------------------------------------------------------------
def test_the_browser_canvas_equals_the_server_buffer_after_quick_actions(context):
    """Quick actions without waiting for frames: once the frames settle, the page's canvas equals the server's
    buffer pixel for pixel (the page draws every frame, in order, however close they come)."""
    with in_page(context) as (host, window, page):
        converges(page, host)
        # A burst: points, ID changes, the help box on and off, the brush and a quick stroke.
        for i, (x, y) in enumerate([(60, 60), (200, 80), (120, 180), (250, 200)]):
            page.click(*image_point(window, x, y), button="left" if i % 2 == 0 else "right")
            page.key(str(i + 1))
        page.key("h")
        page.key("h")
        page.key("b")
        page.drag([image_point(window, 40 + 10 * i, 150 + 3 * i) for i in range(8)])
        page.key("b")
        page.key("+")  # a frame of the whole image area, and right behind it a small one
        page.key("5")
        eventually(host, lambda: len(window.state.guides()), 4)
        converges(page, host)


def test_frames_that_arrive_together_are_all_drawn(context):
    """Over a link that delivers frames in bunches, mpl.js alone loses all but the last of a bunch (matplotlib
    #19116: its image is replaced before it has loaded) and stale pixels stay; the page draws every frame."""
    with serving() as (host, _), BurstyLink(host.port) as port:
        page = Page(context, host.url.replace(f":{host.port}/", f":{port}/"))
        page.wait_for_title("SmartSelector")
        page.settle()
        for key in ("h", "2", "h", "+", "3", "-", "4", "h", "5"):  # large frames, each followed by a small one
            page.key(key)
            page.wait(120)
        converges(page, host)
        assert page.page.evaluate("() => window.labelerFigure.framesDrawn") == page.frames()


def test_healing_frames_mend_dropped_diff_frames():
    """FrameHealer (the notebook's: ipympl's front end may drop frames) on matplotlib's own WebAgg canvas: a
    browser that composites frames as mpl.js does but drops some diff frames ends equal to the buffer once
    the healing frame arrives."""
    from matplotlib.backends.backend_webagg_core import FigureCanvasWebAggCore
    from matplotlib.figure import Figure

    from labeler.gui.hosts.frames import FrameHealer

    class Browser:  # mpl.js: a full frame replaces the canvas, a diff frame is drawn over it (transparent: kept)
        def __init__(self):
            self.pixels, self.drop = None, False

        def send_json(self, content):
            pass

        def send_binary(self, blob):
            frame = np.asarray(Image.open(io.BytesIO(blob)).convert("RGBA"))
            if self.pixels is None or frame.shape != self.pixels.shape:
                self.pixels = frame.copy()
            elif not self.drop:
                opaque = frame[..., 3] == 255
                self.pixels[opaque] = frame[opaque]

    figure = Figure(figsize=(4, 3), dpi=50)
    manager = FigureCanvasWebAggCore.new_manager(figure, 1)
    healer = FrameHealer(manager)
    browser = Browser()
    manager.add_web_socket(browser)
    text = figure.text(0.5, 0.5, "ghost", fontsize=20)
    figure.canvas.draw()  # the first frame: full
    for drop, change in [(False, lambda: text.set_text("moved")), (True, lambda: text.set_visible(False)),
                         (False, lambda: figure.patch.set_facecolor("0.9")), (True, lambda: figure.text(0.1, 0.1, "x"))]:
        change()
        browser.drop = drop
        figure.canvas.draw()
    buffer = np.asarray(figure.canvas.get_renderer().buffer_rgba())
    assert not np.array_equal(browser.pixels, buffer)  # the dropped frames left stale pixels
    browser.drop = False
    healer.heal()  # what the timer calls once the view is idle
    assert np.array_equal(browser.pixels, buffer)
    assert healer.heals == 1
    healer.heal()  # nothing stale: nothing sent
    assert healer.heals == 1


def test_bytes_per_action_in_the_browser(context, capsys):
    """A brush move costs at most 30 KB, hovering with the brush off next to nothing, a guide change with its
    mask preview at most one PNG of the image area.

    The preview is the stand-in model's (tests/standin_backend.py), whose mask is the object's compact
    area as a trained SAM 2's is; untrained SAM 2 weights give noise over the whole image, a worst case that
    benchmarks/bench_web.py measures with the real model code."""
    from standin_backend import StandInBackend

    from labeler.models.backend import ModelSettings

    rgb = read_rgb(REFERENCE)
    with in_page(context, StandInBackend(ModelSettings("standin")).preview(rgb)) as (host, window, page):
        b = window.ax.bbox
        area = server_pixels(host)[page.height - int(b.y1):page.height - int(b.y0), int(b.x0):int(b.x1)]
        with io.BytesIO() as png:
            Image.fromarray(area).save(png, format="png")
            area_png = png.tell()

        start = len(page.received)  # hovering, the brush off
        for i in range(10):
            page.move(*image_point(window, 50 + 15 * i, 100), wait=False)
        page.settle()
        hover = page.bytes_since(start)

        page.move(*image_point(window, 100, 60), wait=False)  # a guide change: a box, with its mask
        page.press()
        page.move(*image_point(window, 160, 110))
        page.move(*image_point(window, 210, 170))
        drag_end, frames = len(page.received), page.frames()
        t0 = time.perf_counter()
        page.release()
        page.wait_for_frame(frames)
        latency = (time.perf_counter() - t0) * 1000
        page.settle()
        change = page.bytes_since(drag_end)
        assert on_server(host, lambda: window.state.object(1).box) is not None

        page.key("b")
        page.settle()
        moves = []
        page.move(*image_point(window, 40, 200), wait=False)
        page.press()
        for i in range(1, 11):
            before = len(page.received)
            page.move(*image_point(window, 40 + 8 * i, 200 - 3 * i))
            page.wait(30)
            moves.append(page.bytes_since(before))
        page.release()
        page.settle()
    with capsys.disabled():
        print(f"\nweb bytes: hover (brush off) {hover} B for 10 moves; box + its mask preview {change / 1000:.1f} kB "
              f"(one PNG of the image area: {area_png / 1000:.1f} kB); brush move max {max(moves) / 1000:.1f} kB, "
              f"median {sorted(moves)[5] / 1000:.1f} kB; release to its frame {latency:.0f} ms")
    assert hover < 1000
    assert change <= area_png
    assert max(moves) <= 30_000


def test_the_windows_keys_arrive_and_matplotlibs_stay_off(context):
    with in_page(context) as (host, window, page):

        def state(fn):
            return on_server(host, lambda: fn(window))

        def becomes(fn, expected):
            eventually(host, lambda: fn(window), expected)

        page.move(*image_point(window, 160, 120), wait=False)
        page.key("3")
        becomes(lambda w: w.state.current_id, 3)
        page.key("b")
        becomes(lambda w: w.brush, True)
        size = state(lambda w: w.state.brush_radius)
        page.key("]")
        page.key("]")
        becomes(lambda w: w.state.brush_radius, size + 4)
        page.key("[")
        becomes(lambda w: w.state.brush_radius, size + 2)
        page.wheel(up=True)
        becomes(lambda w: w.state.brush_radius, size + 4)
        page.key("b")
        page.click(*image_point(window, 100, 100))
        becomes(lambda w: len(w.state.object(3).points) if w.state.object(3) else 0, 1)
        page.key("Control+z", "ctrl+z")
        becomes(lambda w: w.state.object(3), None)
        width = state(lambda w: np.diff(w.ax.get_xlim())[0])
        page.key("+")
        becomes(lambda w: round(np.diff(w.ax.get_xlim())[0] / width, 2), 0.5)
        x0 = state(lambda w: w.ax.get_xlim()[0])
        page.key("Shift+ArrowRight", "shift+right")
        becomes(lambda w: w.ax.get_xlim()[0] > x0, True)
        page.key("0")
        becomes(lambda w: round(np.diff(w.ax.get_xlim())[0] / width, 2), 1.0)
        # matplotlib's own keys stay off: s (save), f (full screen), l/k (log scales), g (grid), p (pan), o (zoom).
        for key in "sflkgo":
            page.key(key)
        page.settle()
        assert state(lambda w: (w.ax.get_xscale(), w.ax.get_yscale())) == ("linear", "linear")
        assert not any(json.loads(m).get("type") in ("save", "navigate_mode") for m in page.json)
        assert np.diff(state(lambda w: w.ax.get_xlim()))[0] == pytest.approx(width, rel=0.01)
        # The wheel is captured: it sizes the brush, the page doesn't scroll.
        assert page.page.evaluate("() => window.labelerFigure.capture_scroll")
        page.key("Escape", "escape")
        becomes(lambda w: (w.done, w.result), (True, None))


def test_motion_is_coalesced_while_the_server_is_busy(context):
    """Moves that arrive faster than they are handled are not all handled, and the newest one always is."""
    with in_page(context) as (host, window, page):
        seen = []
        on_server(host, lambda: window.fig.canvas.mpl_connect("motion_notify_event", lambda e: seen.append(e.x)))
        page.key("b")
        x0, y0 = page.to_page(*image_point(window, 40, 120))
        page.page.evaluate("""([x0, y0]) => {
            const div = window.labelerFigure.canvas_div;
            for (let i = 0; i < 300; i++) {
                div.dispatchEvent(new MouseEvent('mousemove', {clientX: x0 + i % 200, clientY: y0, bubbles: true}));
            }
        }""", [x0, y0])
        page.settle()
        eventually(host, lambda: seen[-1] if seen else None, pytest.approx(x0 + 299 % 200 - page.origin()[0]))
        assert 0 < len(seen) < 300


def test_a_second_tab_takes_over_and_a_reload_keeps_the_state(context):
    with serving() as (host, windows):
        first = Page(context, host.url)
        first.wait_for_title("SmartSelector")
        window = windows[0]
        first.drag([image_point(window, 80, 60), image_point(window, 150, 120), image_point(window, 220, 180)])
        first.settle()
        second = Page(context, host.url)
        second.settle()
        first.settle()
        assert "another tab" in first.status()
        assert first.page.evaluate("() => window.labelerFigure.ws.readyState") == 3  # closed
        converges(second, host)  # the box is there
        first.page.reload()
        first.page.wait_for_function("window.labelerFigure && window.labelerFigure.ws.readyState === 1")
        converges(first, host)
        assert on_server(host, lambda: window.state.object(1).box) is not None
        assert len(host.sockets) == 1


# ----- the command line, as a user runs it ----------------------------------------------------------
class Program:
    """`python main.py ARGS` with `--web --web-port 0`; reads the URL from the line it prints."""

    def __init__(self, args: list, tmp_path: Path):
        self.log = tmp_path / "main.log"
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), *map(str, args), "--web", "--web-port", "0"], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=open(self.log, "wb"), text=True, env={**os.environ, "DISPLAY": ""})
        self.stdout: list[str] = []
        self.url = None
        found = threading.Event()

        def read():
            for line in self.process.stdout:
                self.stdout.append(line)
                if match := re.search(r"open (http://\S+) in a browser", line):
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 60
        while not found.wait(0.2):
            assert self.process.poll() is None and time.monotonic() < deadline, self.output()

    def output(self) -> str:
        return "".join(self.stdout) + self.log.read_text(errors="replace")

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"main.py did not end:\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def agg_window(image: Path):
    """The SmartSelector over `image` on Agg, in the web page's figure size, for replaying a page's events."""
    from matplotlib.figure import Figure

    from labeler.gui.hosts import FIGURE_SIZE

    figure = Figure(figsize=FIGURE_SIZE)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    window = SmartSelector(figure, image, read_rgb(image), None)
    figure.canvas.draw()
    return window


def guide_in_page(page: Page, window) -> None:
    """A box, a positive and a negative point for ID 1; ID 2 painted and erased with the brush, its size by the
    wheel and `]`; a zoom at the cursor, a pan, a point in the zoomed view, the whole image again; Enter."""
    at = functools.partial(image_point, window)
    page.drag([at(105, 67), at(150, 110), at(203, 165)])
    page.click(*at(154, 116))
    page.click(*at(40, 200), button="right")
    page.key("2")
    page.key("b")
    page.move(*at(220, 100))
    page.wheel(up=True)
    page.key("]")
    page.drag([at(220 + 10 * i, 100 + 4 * i) for i in range(6)])
    page.drag([at(240, 100), at(245, 108), at(250, 116)], button="right")
    page.key("b")
    page.move(*at(60, 60), wait=False)
    page.key("+")
    page.key("Shift+ArrowRight", "shift+right")
    page.key("3")
    page.click(*at(110, 70))  # in the zoomed view: the replay must map it the same way
    page.key("0")
    page.key("Enter", "enter")


def test_guiding_two_references_in_the_page_then_the_batch(context, tmp_path):
    """`python main.py --web` on a machine without a display: two references guided in the page, then the batch
    runs and the page says so; prompts.json equals what the same events give on Agg; the exit code is the
    batch's; the token is nowhere but the printed line."""
    from labeler.prompts.prompt_set import load_prompts
    from labeler.types.guides import ReferenceGuides

    out = tmp_path / "out"
    program = Program(["--refs", REFS, "--targets", ROOT / "assets" / "demo" / "targets", "--output", out,
                       "--checkpoint", "none", "--image-size", "64", "--quiet", "--formats", "coco"], tmp_path)
    try:
        page = Page(context, program.url)
        references = sorted(REFS.iterdir())
        replays = []
        for i, image in enumerate(references, 1):
            page.wait_for_title(f"({i}/{len(references)})", timeout=120)
            page.settle(quiet_ms=300)
            start = len(page.events)
            window = agg_window(image)
            guide_in_page(page, window)
            agg_events(window.fig.canvas, page.events[start:])
            assert window.done and window.result is not None
            replays.append(window.result)
        code = program.wait()
        page.wait(500)
        status, lines = page.status(), page.log()
    finally:
        program.kill()
    assert code == 0, program.output()
    assert "the labeler has ended" in status, status
    assert "6 targets: 6 labeled" in lines and "saved" in lines and "results in" in lines, lines
    prompts = load_prompts(out / "prompts.json")
    assert prompts.references == [ReferenceGuides(r.image.resolve(), r.width, r.height, r.objects) for r in replays]
    assert [o.id for o in prompts.references[0].objects] == [1, 2, 3]
    assert prompts.references[0].object(2).paint is not None and prompts.references[0].object(2).erase is not None
    assert (out / "coco.json").is_file() and len(list((out / "masks").iterdir())) > 0
    token = program.url.split("token=")[1]
    assert sum(token in line for line in program.stdout) == 1
    assert token not in program.log.read_text(errors="replace")
    for path in out.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_without_tornado_one_message_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['tornado'] = None; from labeler.cli import main; "
            f"sys.exit(main(['--web', '--refs', {str(REFS)!r}, '--output', {str(tmp_path)!r}], config_path=__import__('pathlib').Path('/nonexistent')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert '--web needs Tornado, in the web extra: pip install -e ".[web]"' in result.stderr


def test_the_headless_path_imports_no_web_or_notebook_module():
    code = ("import sys, labeler, labeler.cli, labeler.gui, labeler.gui.hosts, labeler.batch.pipeline; "
            "print(sorted(m for m in ('tornado', 'ipympl', 'ipywidgets', 'matplotlib.backends.backend_webagg_core') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_reviewing_in_the_page(context, out, test_checkpoint, tmp_path):
    """`python main.py review --web`: accept, exclude, a fix with the brush taught as a reference, the end;
    the folder's states as in the desktop tests, and the teaching relabels the unreviewed targets."""
    from labeler.review.session import Review

    with Review.open(out) as review:
        names = [r.name for r in review.order()]
    program = Program(["review", "--output", out, "--checkpoint", test_checkpoint], tmp_path)
    try:
        page = Page(context, program.url)
        page.wait_for_title(f"(1/{len(names)})", timeout=120)
        page.key("Enter", "enter")  # accept the first
        page.wait_for_title(f"(2/{len(names)})")
        page.key("x")  # exclude the second
        page.wait_for_title(f"(3/{len(names)})")
        page.settle(quiet_ms=300)
        page.key("t")  # the third: also a reference, once fixed
        page.key("f")
        page.key("b")
        page.settle(quiet_ms=300)
        page.drag([(200 + 12 * i, 400 + 5 * i) for i in range(8)])  # figure pixels over the image
        page.key("Enter", "enter")  # save the fix
        page.wait_for_title(f"(4/{len(names)})")
        page.key("q")
        code = program.wait(timeout=180)
        page.wait(500)
        lines = page.log()
    finally:
        program.kill()
    assert code == 0, program.output()
    with Review.open(out) as review:
        states = [review.record(n).review_state if review.record(n).review else None for n in names]
        taught = review.record(names[2]).review.get("teach")
    assert states[:3] == ["accepted", "excluded", "corrected"] and states[3:] == [None] * (len(names) - 3)
    assert taught
    assert "reviewed 3 of" in lines and "targets:" in lines, lines  # the relabel's summary


def test_config_py_and_the_options_turn_the_page_on():
    import runpy

    from labeler.cli import _parser
    from labeler.gui.hosts import WEB_DEFAULTS

    config = runpy.run_path(str(ROOT / "config.py"))
    assert {name: config[name] for name in WEB_DEFAULTS} == WEB_DEFAULTS
    args = vars(_parser({"WEB": True, "WEB_HOST": "0.0.0.0", "WEB_PORT": 0}).parse_args([]))
    assert (args["WEB"], args["WEB_HOST"], args["WEB_PORT"]) == (True, "0.0.0.0", 0)
    assert vars(_parser({"WEB": True}).parse_args(["--no-web"]))["WEB"] is False
    assert vars(_parser({}).parse_args(["--web", "--web-port", "9000"]))["WEB_PORT"] == 9000
