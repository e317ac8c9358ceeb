"""Ctrl-C and SIGTERM as a stop request: front ends install this; the library only reads the event."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

log = logging.getLogger("labeler")


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT or SIGTERM asks the batch to stop after the current target; a second one stops at once."""
    stop = threading.Event()
    stop.signum = 0

    def request_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.signum = signum
        stop.set()
        log.warning("%s: stopping after the current target (press Ctrl-C again to stop at once)",
                    signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
