"""The browser host (`--web`): the windows in one browser page, for machines without an X server (a cloud
GPU server, Docker). The labeler's own Tornado application serves the page, matplotlib's static files
and one websocket; matplotlib's WebAgg core (`backend_webagg_core`) renders the figure into PNG frames
and turns the browser's events into matplotlib's. Not matplotlib's global WebAgg server: that one has no
authentication, ignores `block` and outlives its figures.

Who gets in: a random token, printed once in the page's URL and written nowhere else. Every HTTP request
and websocket without it (the URL's `?token=`, or the cookie the first visit turns it into) gets 403;
a websocket whose Origin is another site's gets 403 too. Only the page, `mpl.js` and matplotlib's own
css/ and js/ files are served: no other path, no directory listing. The newest tab takes over: an older
one is told so and disconnected (a reload takes it back); the state lives here, so nothing drawn is lost.

Threads: the server runs on its own thread and event loop, and everything that touches the figure (the
windows, their timers, the browser's events) runs there. The command's thread builds the model, waits
in `run`, and then labels while the page shows the progress (`reporting`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import secrets
import socket
import threading
from pathlib import Path

import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ...errors import UsageError
from .base import show_in_turn, without_default_keys
from .desktop import FIGURE_SIZE

log = logging.getLogger("labeler")
PAGE = Path(__file__).with_name("web_page.html")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class WebHost:
    """The windows in a browser page at `http://address:port/?token=…` (port 0: a free one).

    All windows share one figure, so one page shows the references (or the review) one after another.
    `url` (with the token) is set by `open`; `announce` receives the one line that prints it.
    """

    def __init__(self, address: str = "127.0.0.1", port: int = 8988, announce=None):
        self.address, self.port = address, port
        self.announce = announce or (lambda line: print(line, flush=True))  # stdout, not the log: it holds the token
        self.url: str | None = None
        self.figure = self.manager = None
        self.sockets: list[PageSocket] = []  # connected tabs: the newest only, once it has opened
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._token = ""
        self._status = "starting"
        self._lines: list[str] = []  # the log lines the page shows, for a tab that connects later
        self._pending_motion: dict | None = None

    # ----- the Host protocol (called from the command's thread) -----------------------------------
    def open(self) -> None:
        """Start serving and print the page's URL; UsageError when the port can't be had."""
        if self._thread is not None:
            return
        try:
            listeners = bind_sockets(self.port, self.address)
        except OSError as e:
            raise UsageError(f"--web-port {self.port}: can't serve on {self.address}:{self.port} ({e.strerror}); "
                             "choose another with --web-port, or --web-port 0 for a free one") from None
        self.port = listeners[0].getsockname()[1]
        self._token = secrets.token_urlsafe(24)
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(listeners, ready),), name="web",
                                        daemon=True)
        self._thread.start()
        ready.wait()
        if self.address not in LOOPBACK:
            log.warning("--web-host %s: anyone who can reach port %d and has the page's URL (its token) can "
                        "drive the labeler; prefer the default 127.0.0.1 and an SSH tunnel", self.address, self.port)
        name = socket.gethostname() if self.address in ("", "0.0.0.0", "::") else self.address
        self.url = f"http://{'[' + name + ']' if ':' in name else name}:{self.port}/?token={self._token}"
        self.announce(f"open {self.url} in a browser (from another machine: ssh -L {self.port}:localhost:{self.port} "
                      f"SERVER, or docker run -p 127.0.0.1:{self.port}:{self.port} …, then the same URL)")

    def run(self, sequence) -> None:
        """Show the sequence's windows in the page, one after another; returns once it is over."""
        over = threading.Event()
        ended: list[BaseException | None] = []

        def on_end(error):
            ended.append(error)
            over.set()

        self.call_soon(self._start, sequence, on_end)
        while not over.wait(0.25):  # with a timeout, so Ctrl-C reaches this thread
            if self._thread is None:
                return  # closed meanwhile (by another thread): no more windows
        if ended[0] is not None:
            raise ended[0]

    def progress(self, done: int, total: int) -> None:
        self.call_soon(self._set_status, f"labeling: {done}/{total} targets")

    @contextlib.contextmanager
    def reporting(self):
        """The page shows the labeler's log lines, and an error; the server stops at the end."""
        handler = _PageLog(self)
        log.addHandler(handler)
        try:
            yield
        except UsageError as e:
            self.call_soon(self._set_status, f"error: {e}")
            raise
        except BaseException:
            self.call_soon(self._set_status, "stopped")
            raise
        finally:
            log.removeHandler(handler)
            self.close()

    def close(self) -> None:
        """Tell the page the labeler has ended, then stop serving."""
        if self._thread is None or self._loop is None:
            return
        self.call_soon(self._end)
        thread, self._thread = self._thread, None
        thread.join(timeout=10)

    # ----- on the server's thread ---------------------------------------------------------------
    async def _serve(self, listeners, ready: threading.Event) -> None:
        from matplotlib.backends.backend_webagg_core import FigureCanvasWebAggCore
        from matplotlib.figure import Figure

        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self.figure = Figure(figsize=FIGURE_SIZE)
        self.manager = FigureCanvasWebAggCore.new_manager(self.figure, 1)
        self.manager.set_window_title("sam2-labeler")
        without_default_keys(self.manager)
        self.figure.canvas.set_capture_scroll(True)  # the wheel sizes the brush and zooms; the page mustn't scroll
        server = HTTPServer(self._application())
        server.add_sockets(listeners)
        ready.set()
        await self._stopping.wait()
        server.stop()
        await asyncio.sleep(0.2)  # the last status line reaches the page
        for s in list(self.sockets):
            s.close()
        await server.close_all_connections()

    def _start(self, sequence, on_end) -> None:
        self._set_status("")
        show_in_turn(sequence, lambda: self.figure, self._loop.call_soon, on_end)

    def call_soon(self, fn, *args) -> concurrent.futures.Future:
        """Run `fn(*args)` on the server's thread, where the figure lives; a Future of its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def call():
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 (the caller's to handle)
                future.set_exception(e)

        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(call)
        else:
            future.set_exception(RuntimeError("the web host is not serving"))
        return future

    def _end(self) -> None:
        self._set_status("the labeler has ended; close this page")
        self._stopping.set()

    def _set_status(self, text: str) -> None:
        """The line above the figure: what the labeler does now (the batch's progress, an error, the end)."""
        self._status = text
        for s in self.sockets:
            s.send_json({"type": "labeler_status", "text": text})

    def _add_line(self, text: str) -> None:
        """A log line, under the figure."""
        self._lines.append(text)
        for s in self.sockets:
            s.send_json({"type": "labeler_log", "lines": [text]})

    def _application(self) -> tornado.web.Application:
        from matplotlib.backends.backend_webagg_core import FigureManagerWebAgg

        static = Path(FigureManagerWebAgg.get_static_file_path())
        kwargs = {"host": self}
        return tornado.web.Application([
            (r"/", PageHandler, kwargs),
            (r"/mpl\.js", ScriptHandler, kwargs),
            (r"/ws", PageSocket, kwargs),
            (r"/_static/((?:css|js)/[^/]+)", StaticHandler, {**kwargs, "path": str(static)}),
        ], log_function=_log_request, websocket_max_message_size=1 << 20)

    def allowed(self, handler: tornado.web.RequestHandler) -> bool:
        """Whether a request carries the token (the URL's `?token=`, or the cookie)."""
        given = handler.get_query_argument("token", None) or handler.get_cookie(self.cookie) or ""
        return hmac.compare_digest(given.encode(), self._token.encode())

    @property
    def cookie(self) -> str:
        return f"labeler-token-{self.port}"  # cookies ignore ports: one per server

    def attach(self, page: PageSocket) -> None:
        """A tab connected: it takes over from any other, gets the figure and the status line."""
        for old in list(self.sockets):
            old.send_json({"type": "labeler_status", "text": "opened in another tab: reload this one to take over"})
            old.close(4000, "opened in another tab")
            self.detach(old)
        self.sockets.append(page)
        self.manager.add_web_socket(page)
        page.send_json({"type": "labeler_status", "text": self._status})
        page.send_json({"type": "labeler_log", "lines": self._lines})

    def detach(self, page: PageSocket) -> None:
        if page in self.sockets:
            self.sockets.remove(page)
            self.manager.remove_web_socket(page)

    def receive(self, message: dict) -> None:
        """A browser event. Mouse moves are coalesced: while moves arrive faster than they are handled,
        only the newest is handled, right before any other event (so none piles up behind a repaint)."""
        if message.get("type") == "motion_notify":
            if self._pending_motion is None:
                self._loop.call_soon(self._flush_motion)
            self._pending_motion = message
            return
        self._flush_motion()
        if message.get("type") != "dblclick":  # a browser sends it after the second click's own press and release
            self.manager.handle_json(message)

    def _flush_motion(self) -> None:
        message, self._pending_motion = self._pending_motion, None
        if message is not None:
            self.manager.handle_json(message)


class _Guarded(tornado.web.RequestHandler):
    def initialize(self, host: WebHost, **kwargs) -> None:
        self.host = host
        super().initialize(**kwargs)

    def prepare(self) -> None:
        if not self.host.allowed(self):
            raise tornado.web.HTTPError(403)

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")  # no other site frames the page (clickjacking)
        self.set_header("Referrer-Policy", "no-referrer")

    def write_error(self, status_code: int, **kwargs) -> None:
        self.finish(f"{status_code}: open the URL the labeler printed, with its ?token=\n"
                    if status_code == 403 else f"{status_code}\n")


class PageHandler(_Guarded):
    def get(self) -> None:
        if self.get_query_argument("token", None) is not None:  # the first visit: token to cookie, out of the URL
            self.set_cookie(self.host.cookie, self.get_query_argument("token"), httponly=True, samesite="Lax")
            self.redirect("/")
            return
        self.write(PAGE.read_text(encoding="utf-8"))


class ScriptHandler(_Guarded):
    def get(self) -> None:
        from matplotlib.backends.backend_webagg_core import FigureManagerWebAgg

        self.set_header("Content-Type", "application/javascript")
        self.write(FigureManagerWebAgg.get_javascript())


class StaticHandler(_Guarded, tornado.web.StaticFileHandler):
    """matplotlib's own css/ and js/ files (tornado's StaticFileHandler keeps requests inside its folder)."""


class PageSocket(tornado.websocket.WebSocketHandler):
    """The page's websocket: frames and events between the figure and the browser (`send_json`,
    `send_binary`: what matplotlib's WebAgg manager sends through)."""

    def initialize(self, host: WebHost) -> None:
        self.host = host

    def prepare(self) -> None:
        if not self.host.allowed(self):
            raise tornado.web.HTTPError(403)

    # check_origin: tornado's own, the Origin's host must be the request's Host (refused: 403).

    def open(self) -> None:
        self.set_nodelay(True)
        self.host.attach(self)

    def on_message(self, message) -> None:
        content = json.loads(message)
        if content.get("type") != "supports_binary":  # the page always does
            self.host.receive(content)

    def on_close(self) -> None:
        self.host.detach(self)

    def send_json(self, content: dict) -> None:
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            self.write_message(json.dumps(content))

    def send_binary(self, blob: bytes) -> None:
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            self.write_message(blob, binary=True)


class _PageLog(logging.Handler):
    """The labeler's log lines (info and up), under the page's figure."""

    def __init__(self, host: WebHost):
        super().__init__(logging.INFO)
        self.host = host

    def emit(self, record: logging.LogRecord) -> None:
        self.host.call_soon(self.host._add_line, record.getMessage())


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Tornado's access log would write every URL, the first one's token with it.
    if handler.get_status() >= 400:
        log.debug("web: %d %s %s", handler.get_status(), handler.request.method, handler.request.path)
