"""A remote X display on this machine: Xvfb over TCP, without shared memory, behind a byte-counting proxy.

Over `ssh -X` or to VcXsrv every request a window sends crosses the network: each image it puts is
sent pixel by pixel, uncompressed. This harness shows what a window costs there. Xvfb listens on
TCP only (no Unix socket for the program under test, no MIT-SHM, as a remote display has neither),
and a proxy thread on 127.0.0.1 forwards the program's connections to it, counting the bytes each
way. Tools that drive the display and take screenshots use `xvfb_display` directly, so their
traffic is not counted.

    with remote_x(tmp_path) as x:
        program = subprocess.Popen([...], env={**os.environ, "DISPLAY": x.display})
        before = x.sent(); ...act with xdotool on x.xvfb_display...; x.wait_idle(); x.sent() - before

Xvfb runs without `-ac`: loopback clients are allowed by the server's default host list, and
nothing else on the network may connect to the unauthenticated display while a test runs.
Needs Xvfb (`apt-get install -y xvfb`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

X_PORT = 6000  # display N listens on TCP port 6000 + N


class _Proxy:
    """Forwards TCP connections from 127.0.0.1:`port` to 127.0.0.1:`target`, counting bytes each way."""

    def __init__(self, target: int):
        self.target = target
        self.counts = {"sent": 0, "received": 0}  # client->server, server->client
        self._lock = threading.Lock()
        self._listener = _listen_on_a_free_display_port()
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="xproxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = _connect(self.target)
            except OSError:
                client.close()  # the program sees a refused display, as with no server there
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, "sent"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "received"), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, count: str) -> None:
        try:
            while data := source.recv(1 << 16):
                with self._lock:
                    self.counts[count] += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def count(self, name: str) -> int:
        with self._lock:
            return self.counts[name]

    def close(self) -> None:
        self._closed = True
        for s in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                s.close()


def _connect(port: int, timeout: float = 5) -> socket.socket:
    """A connection to 127.0.0.1:`port`, retried for `timeout` seconds while nothing listens there yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            sock.settimeout(None)  # blocking from here on: an idle X connection is no error
            return sock
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _listen_on_a_free_display_port() -> socket.socket:
    """A listening socket on 127.0.0.1 at the port of a free display number (above 20, clear of real ones)."""
    for number in range(21, 400):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", X_PORT + number))
        except OSError:
            s.close()
            continue
        s.listen(8)
        return s
    raise RuntimeError("no free X display port on 127.0.0.1 between 6021 and 6399")


class RemoteX:
    """What `remote_x` yields: the display names and the byte counts of the program's X traffic."""

    def __init__(self, number: int, proxy: _Proxy):
        self.xvfb_display = f":{number}"  # direct: for xdotool and screenshots, not counted
        self.display = f"127.0.0.1:{proxy.port - X_PORT}"  # through the proxy: for the program under test
        self._proxy = proxy

    def sent(self) -> int:
        """Bytes the program has sent to the X server so far (its requests: drawing, images)."""
        return self._proxy.count("sent")

    def received(self) -> int:
        """Bytes the X server has sent to the program so far (events, replies)."""
        return self._proxy.count("received")

    def wait_idle(self, quiet: float = 0.4, timeout: float = 15) -> bool:
        """Wait until no byte has crossed either way for `quiet` seconds; False if that took over `timeout`."""
        deadline = time.monotonic() + timeout
        last = (self.sent(), self.received())
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = (self.sent(), self.received())
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= quiet:
                return True
        return False


@contextlib.contextmanager
def remote_x(log_dir: Path, screen: tuple[int, int] = (1400, 900)):
    """Start Xvfb (TCP only, no MIT-SHM) and the counting proxy; yields a `RemoteX`. Stops both after."""
    from xdisplay import xvfb

    with xvfb(Path(log_dir), screen, ("-listen", "tcp", "-nolisten", "unix", "-extension", "MIT-SHM"),
              "xvfb-remote.log") as display:
        number = int(display.lstrip(":"))
        try:
            _connect(X_PORT + number).close()  # Xvfb answers on TCP before anyone is pointed at it
        except OSError as e:
            log = (Path(log_dir) / "xvfb-remote.log").read_text(errors="replace")
            raise RuntimeError(f"Xvfb :{number} does not listen on TCP port {X_PORT + number} ({e}): {log}") from None
        proxy = _Proxy(X_PORT + number)
        try:
            yield RemoteX(number, proxy)
        finally:
            proxy.close()
