"""Guiding and reviewing in a notebook cell: `guide_in_notebook` and `review_in_notebook` show the windows in
an ipympl widget (`hosts/notebook.py: NotebookHost`) and return at once; the result arrives in a
`concurrent.futures.Future` when the last window is done, and a later cell reads it: `session.result()`.
A kernel handles a widget's events only while it is idle, between cells, so nothing here waits for the person.

Usage, in a cell:
    session = labeler.guide_in_notebook("refs", output="output", checkpoint="none", image_size=256)
and, in a later cell, once the last reference is accepted:
    prompts = session.result()
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .. import defaults
from ..errors import UsageError
from .hosts import OneWindow
from .hosts.notebook import NotebookHost

__all__ = ["NotebookSession", "guide_in_notebook", "review_in_notebook"]


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
    precision: str = defaults.PRECISION,
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
    from ..prompts.prompt_set import as_prompt_set
    from ..utils.images import list_images
    from .selector import GuideSequence

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
        backend = _backend(model, checkpoint, image_size, device, precision)
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
    precision: str | None = None,
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
    from ..review.session import Review
    from .review_window import ReviewWindow

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
        backend = _backend(**review.model_settings(model, checkpoint, image_size, device, precision))
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


def _backend(model, checkpoint, image_size, device, precision):
    from ..models.backend import ModelSettings, build_backend
    from ..models.common import resolve_device

    return build_backend(ModelSettings(model, checkpoint, image_size, resolve_device(device).type, precision))
