"""The notebook host: the windows in a Jupyter, JupyterLab, VS Code or Colab cell, on ipympl's widget.

A kernel handles a widget's events only while it is idle, between cells, so nothing here waits for the
person: `guide_in_notebook` and `review_in_notebook` show the widget and return at once; each window's
`on_done` schedules the next one on the kernel's event loop (`show_in_turn`), and the result arrives
in a `concurrent.futures.Future` when the last window is done. A later cell reads it: `session.result()`.

What it changes in the kernel: ipympl's backend module is imported (which registers the hook that
`%matplotlib widget` registers too, idle while another backend is in use). matplotlib's backend,
pyplot's figures and rcParams stay as they are: the figure lives on an ipympl `Canvas` and
`FigureManager` of its own, outside pyplot, and matplotlib's default key shortcuts (S saves, P pans,
Q closes, …) are disconnected on that canvas alone, so the windows' keys reach only the windows.

Usage, in a cell:
    session = labeler.guide_in_notebook("refs", output="output", checkpoint="none", image_size=256)
and, in a later cell, once the last reference is accepted:
    prompts = session.result()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ... import defaults
from ...errors import UsageError
from .base import OneWindow, show_in_turn, without_default_keys
from .desktop import FIGURE_SIZE

__all__ = ["NOTEBOOK_DPI", "NotebookHost", "NotebookSession", "guide_in_notebook", "review_in_notebook"]

NOTEBOOK_DPI = 72  # FIGURE_SIZE at 72 dpi: 936 x 540 CSS pixels, about a notebook cell's width
INSTALL = 'pip install -e ".[notebook]"'
# ipympl before 0.9.6 drops every key press under matplotlib 3.10 and later (ipympl issue #575, fixed by #577);
# 0.9.5 is the first to send the mouse buttons 3.10 reads (#568).
KEYS_FIXED_IN = (0, 9, 6)
_numbers = itertools.count(1)


class NotebookHost:
    """The windows in one ipympl widget, in the cell that opened it; the windows share its figure.

    Not a blocking host: `start(sequence, on_end)` shows the first window and returns; `on_end(error)`
    is called (on the kernel's thread) once the sequence is over or failed.
    """

    def __init__(self):
        self.figure = self.canvas = self.manager = self.healer = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Make the widget, or raise UsageError saying why not (no ipympl, not in a kernel)."""
        if self.canvas is not None:
            return
        require_ipympl()
        self._loop = _kernel_loop()
        from ipympl.backend_nbagg import Canvas, FigureManager
        from matplotlib.figure import Figure

        from .frames import FrameHealer

        self.figure = Figure(figsize=FIGURE_SIZE, dpi=NOTEBOOK_DPI)
        self.canvas = Canvas(self.figure)
        self.manager = FigureManager(self.canvas, next(_numbers))
        without_default_keys(self.manager)
        self.canvas.toolbar_visible = False  # its pan and zoom modes would take the mouse; the windows zoom themselves
        self.canvas.header_visible = False  # the figure shows its own title
        self.canvas.capture_scroll = True  # the wheel sizes the brush and zooms; the notebook mustn't scroll
        self.healer = FrameHealer(self.manager)

    def start(self, sequence, on_end) -> None:
        """Show the sequence's windows one after another, without waiting (see `hosts.show_in_turn`)."""
        show_in_turn(sequence, self._next_figure, self._loop.call_soon_threadsafe, on_end)

    def run(self, sequence) -> None:
        raise UsageError("a notebook can't wait for its windows (the kernel handles their events only between "
                         "cells): use labeler.guide_in_notebook or labeler.review_in_notebook")

    def show(self) -> None:
        """Display the widget in the cell that runs now."""
        from IPython.display import display

        display(self.canvas)

    def end(self, message: str) -> None:
        """The sequence is over: the widget shows `message` in place of the windows."""
        fig = self.figure
        fig.clear()
        fig.set_facecolor("#202020")
        fig.text(0.5, 0.5, message, color="white", ha="center", va="center", fontsize=13, wrap=True)
        self.canvas.draw_idle()

    def close(self) -> None:
        """Close the widget (a cell that failed before showing it)."""
        if self.canvas is not None:
            self.canvas.close()

    def progress(self, done: int, total: int) -> None:
        pass  # label_batch's progress bar shows in the cell that runs it

    def reporting(self):
        return contextlib.nullcontext()

    def _next_figure(self):
        # The next window is built on the figure right after this returns; then it is drawn whole.
        self._loop.call_soon_threadsafe(self.canvas.draw_idle)
        return self.figure


class NotebookSession:
    """What a notebook cell started: the widget (shown in that cell) and the result to come.

    `future`: a `concurrent.futures.Future`, set when the last window is done (its result) or failed
    (its exception). `done()` says whether it is; `result()` returns it (see there); `show()` displays
    the widget again, in the cell that calls it. `host`: the `NotebookHost` (its `canvas` is the
    widget); `sequence`: the windows (a `GuideSequence`, or the review's `OneWindow`).
    """

    def __init__(self, what: str, host: NotebookHost | None, sequence, waiting: str):
        self.what, self.host, self.sequence = what, host, sequence
        self.future: Future = Future()
        self._waiting = waiting
        self._thread = threading.current_thread()  # the kernel's: it must stay free to handle the widget

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None):
        """The result, or the exception that stopped the windows, raised. On the kernel's own thread (a
        cell) it never waits: while the windows are open it raises UsageError saying what is left,
        since a cell that waited would keep the kernel from handling the widget."""
        if not self.future.done() and threading.current_thread() is self._thread:
            raise UsageError(f"{self._waiting}, then run this cell again")
        return self.future.result(timeout)

    def show(self) -> None:
        if self.host is not None:
            self.host.show()

    def __repr__(self) -> str:
        if not self.future.done():
            state = "open: " + self._waiting
        elif self.future.exception() is not None:
            state = f"failed: {self.future.exception()}"
        else:
            state = "done: read .result()"
        return f"<{self.what} in a notebook, {state}>"

    def _started(self) -> NotebookSession:
        """Show the widget, or raise in the cell what stopped the windows before anyone saw them."""
        if self.future.done() and self.future.exception() is not None:
            self.host.close()
            raise self.future.exception()
        self.host.show()
        return self

    def _end(self, error: BaseException | None, value=None, message: str = "") -> None:
        if error is not None:
            self.future.set_exception(error)
            message = f"stopped: {error}"
        else:
            self.future.set_result(value)
        if self.host is not None:
            self.host.end(message)


def guide_in_notebook(
    references: str | os.PathLike | list | None,
    output: str | os.PathLike = "output",
    classes: dict[int, str] | None = None,
    model: str = defaults.MODEL,
    checkpoint: str | os.PathLike | None = defaults.CHECKPOINT,
    image_size: int | None = defaults.IMAGE_SIZE,
    device: str = defaults.DEVICE,
    existing=None,
) -> NotebookSession:
    """Guide the references in this cell: the SmartSelector on each one in turn, in an ipympl widget.

    The cell builds the model, shows the widget with the first reference and returns at once; the
    kernel handles the widget's mouse and keys once no cell runs. Draw the guides as in the desktop
    window (docs/guiding.md: Enter or Q accepts a reference, Esc skips it); the prompts are saved to
    `output`/prompts.json after every accepted reference. When the last reference is done,
    `session.future` (a `concurrent.futures.Future`) gets the `PromptSet`, or the error that stopped
    the guiding; read it in a later cell with `session.result()` (in a cell it never waits: it raises
    UsageError while references are still open).

    references: a folder of images or a list of image paths (None: those of `existing`). classes:
    class names by object ID, e.g. {1: "scratch"}. model, checkpoint, image_size, device: as
    `label_batch`'s (checkpoint "none": untrained weights, the masks are noise). existing: a
    `PromptSet` or a prompts file whose guides pre-fill their references (`python main.py --edit`).
    Raises UsageError at once without ipympl (`pip install -e ".[notebook]"`), outside a notebook's
    kernel, without references, or for a missing checkpoint.
    """
    from ...prompts.prompt_set import as_prompt_set
    from ...utils.images import list_images
    from ..selector import GuideSequence

    existing = as_prompt_set(existing) if existing is not None else None
    if references is None:
        paths = [r.image for r in existing.references] if existing else []
    elif isinstance(references, (str, os.PathLike)):
        if not Path(references).is_dir():
            raise UsageError(f"reference folder {references} does not exist")
        paths = list_images(references)
    else:
        paths = [Path(p) for p in references]
    if not paths:
        raise UsageError(f"no reference images in {references}")
    host = NotebookHost()
    host.open()  # before the model: a missing ipympl is said in a second, not after the loading
    try:
        backend = _backend(model, checkpoint, image_size, device)
    except BaseException:
        host.close()
        raise
    prompts_path = Path(output) / "prompts.json"
    sequence = GuideSequence(paths, backend, dict(classes or {}), prompts_path, existing)
    session = NotebookSession("guiding", host, sequence,
                              "the references are not all done yet: draw the guides on each one and press Enter")

    def on_end(error: BaseException | None) -> None:
        prompts = None
        if error is None:
            try:
                prompts = sequence.prompts()
            except Exception as e:  # noqa: BLE001 (handed to the session)
                error = e
        n = len(prompts.references) if prompts is not None else 0
        saved = f", saved to {prompts_path}" if n else " (nothing saved)"
        session._end(error, prompts, f"{n} reference(s) guided{saved}\nread session.result() in the next cell")

    host.start(sequence, on_end)
    return session._started()


def review_in_notebook(
    output: str | os.PathLike = "output",
    targets: str | os.PathLike | None = None,
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    image_size: int | None = None,
    device: str | None = None,
) -> NotebookSession:
    """Review the labeled output folder in this cell: the review window (`python main.py review`'s), in
    an ipympl widget, worst target first.

    The cell opens the review (holding the folder's lock), shows the widget and returns at once; the
    kernel handles the widget's mouse and keys once no cell runs (docs/review.md: Enter or A accepts
    a target, F fixes it, X excludes it, T teaches it, Q ends the review). Every change is saved as it
    is made. When the review ends, the targets marked to teach become references of the folder's
    prompts.json, the lock is released, and `session.future` gets those prompts (to relabel the
    unreviewed targets with: `label_batch(prompts, ...)`), or None when nothing was taught; read it in
    a later cell with `session.result()`.

    targets: the target folder (None: the one the folder's manifest records). model, checkpoint,
    image_size, device: None for the folder's own settings. Raises UsageError at once without ipympl,
    outside a notebook's kernel, or for a folder that holds no batch or is in use.
    """
    from ...review.session import Review
    from ..review_window import ReviewWindow

    host = NotebookHost()
    host.open()
    lock = contextlib.ExitStack()  # the Review stays open, the folder locked, until the window ends
    try:
        review = lock.enter_context(Review.open(output, targets))
        if not review.records():
            lock.close()
            host.close()
            print(f"nothing to review in {output}")
            session = NotebookSession("review", None, None, "")
            session.future.set_result(None)
            return session
        backend = _backend(**review.model_settings(model, checkpoint, image_size, device))
        encoder = ThreadPoolExecutor(1, "embed")
    except BaseException:
        lock.close()
        host.close()
        raise
    sequence = OneWindow(lambda figure: ReviewWindow(figure, review, backend, encoder))
    session = NotebookSession("review", host, sequence, "the review has not ended yet: press Q in it to end it")

    def on_end(error: BaseException | None) -> None:
        encoder.shutdown(wait=False)
        prompts, counts = None, {}
        try:
            if error is None:
                counts = review.counts()
                prompts = review.finish()
        except Exception as e:  # noqa: BLE001 (handed to the session)
            error = e
        finally:
            lock.close()
        taught = (f"\n{len(prompts.references)} references now: relabel with session.result()" if prompts
                  else "\nnothing taught")
        session._end(error, prompts, f"reviewed {counts.get('reviewed', 0)} of {counts.get('targets', 0)} "
                                     f"targets{taught}")

    try:
        host.start(sequence, on_end)
    except BaseException:
        lock.close()
        host.close()
        raise
    return session._started()


def require_ipympl() -> None:
    """ipympl and ipywidgets importable, in versions that deliver keys and mouse buttons; else UsageError."""
    try:
        import ipympl
        import ipympl.backend_nbagg  # noqa: F401 (imports IPython and ipywidgets too)
    except ImportError as e:
        raise UsageError(f"the notebook widget needs ipympl ({e.name or e} can't be imported): {INSTALL}") from None
    import matplotlib

    version = _version(ipympl.__version__)
    if matplotlib.__version_info__[:2] >= (3, 10) and version < KEYS_FIXED_IN:
        raise UsageError(f"ipympl {ipympl.__version__} delivers no key presses under matplotlib "
                         f"{matplotlib.__version__} (ipympl 0.9.6 and later do): {INSTALL}, or pip install -U ipympl")


def _kernel_loop() -> asyncio.AbstractEventLoop:
    """The event loop of the kernel this runs in (the one that handles the widget's messages)."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        raise UsageError("guide_in_notebook and review_in_notebook run in a notebook cell (Jupyter, JupyterLab, "
                         "VS Code, Colab); in a terminal use `python main.py` (`--web` on a server)")
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a kernel that runs cells outside its loop: its tornado loop is the same one
        import tornado.ioloop

        return tornado.ioloop.IOLoop.current().asyncio_loop


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        parts.append(int(digits or 0))
    return tuple(parts)


def _backend(model, checkpoint, image_size, device):
    from ...models.backend import ModelSettings, build_backend
    from ...models.common import resolve_device

    return build_backend(ModelSettings(model, checkpoint, image_size, resolve_device(device).type))
