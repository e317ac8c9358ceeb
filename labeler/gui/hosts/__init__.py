"""Window hosts: where the windows are shown. A host owns the matplotlib backend, makes the windows'
figures and handles their events until a sequence of windows is over; the windows (SmartSelector,
ReviewWindow) only draw on a figure and handle its events, whichever backend shows it.

A window is anything with `fig` (its figure), `done` (bool) and `on_done` (None, or called once when
it is done: accepted, skipped, ended, or its figure closed). A sequence gives the windows one after
another (`next_window`): the SmartSelector's references, the review's one window. Hosts:

- `DesktopHost` (`desktop.py`): TkAgg or QtAgg, on a desktop, over `ssh -X`, to VcXsrv; blocks.
- `WebHost` (`web.py`): one browser page, served by the labeler's own Tornado application on
  matplotlib's WebAgg core, behind a token; blocks.
- `NotebookHost` (`notebook.py`): a Jupyter cell with ipympl; returns at once, the result arrives later.

Usage:
    host = DesktopHost()
    host.open()                 # UsageError saying why where no window can open
    host.run(sequence)          # returns once the sequence is over
    with host.reporting():      # the work after the windows: the page shows its log lines and errors
        label_batch(..., on_progress=host.progress)
"""

from __future__ import annotations

import argparse

from .base import Host, OneWindow, Sequence, Window, show_in_turn
from .desktop import FIGURE_SIZE, DesktopHost, use_window_backend

__all__ = ["FIGURE_SIZE", "WEB_DEFAULTS", "WEB_OPTIONS", "DesktopHost", "Host", "OneWindow", "Sequence", "Window",
           "host_for", "show_in_turn", "use_window_backend"]

# config.py name -> (option, argparse keywords), for `python main.py` and `python main.py review`.
WEB_OPTIONS = {
    "WEB": ("--web", dict(action=argparse.BooleanOptionalAction, help="the windows in a browser page, behind a "
                          "token (no X server needed); prints the page's URL")),
    "WEB_HOST": ("--web-host", dict(metavar="ADDR", help="--web: the address to serve on; anything but loopback "
                                    "lets whoever reaches the port with the token drive the labeler")),
    "WEB_PORT": ("--web-port", dict(type=int, metavar="PORT", help="--web: the port (0: a free one)")),
}
WEB_DEFAULTS = {"WEB": False, "WEB_HOST": "127.0.0.1", "WEB_PORT": 8988}


def host_for(web: bool = False, address: str = WEB_DEFAULTS["WEB_HOST"], port: int = WEB_DEFAULTS["WEB_PORT"]):
    """The host the command line asks for: a browser page (`--web`), else the desktop."""
    if web:
        try:
            from .web import WebHost
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] != "tornado":
                raise
            from ...errors import UsageError

            raise UsageError('--web needs Tornado, in the web extra: pip install -e ".[web]"') from None
        return WebHost(address, port)
    return DesktopHost()
