"""SmartSelector: draw guides on reference images in a window, with SAM 2's mask shown live.

A SmartSelector is a `GuideCanvas` over one reference with the SmartSelector's keys (`keys.SELECTOR_KEYS`):
Enter accepts the reference's guides, Esc skips it, closing the window accepts it. The reference's image
embedding is computed on a background thread while the window is already open; each guide change
reruns only SAM 2's prompt encoder and mask decoder. A `GuideSequence` gives the references one after
another to a window host (`hosts/`; `run_selector`: the desktop by default) and saves the prompts after each.

Usage: `prompts = run_selector(reference_paths, backend, classes, Path("output/prompts.json"))`.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ..prompts.guide_state import GuideState
from ..prompts.prompt_set import PromptSet, ReferenceGuides, save_prompts
from ..utils.images import read_rgb
from .canvas import GuideCanvas, SessionInfo
from .keys import SELECTOR_KEYS

log = logging.getLogger(__name__)


class SmartSelector(GuideCanvas):
    """One reference in one figure: image, live masks, guides, sidebar; keys from `SELECTOR_KEYS`.

    The figure can be any matplotlib figure (a host's window, or Agg in tests); `result` is set when
    the reference is accepted (a `ReferenceGuides`, image pixels) and stays None when it is skipped.
    `on_done` is called once when the reference is accepted or skipped.
    """

    def __init__(
        self,
        figure,
        image_path: Path,
        rgb: np.ndarray,
        preview,
        state: GuideState | None = None,
        session: SessionInfo | None = None,
        title: str = "",
        on_done: Callable[[], None] | None = None,
    ):
        super().__init__(figure, rgb, preview, state, session, title, SELECTOR_KEYS)
        self.image_path = Path(image_path)
        self.result: ReferenceGuides | None = None
        self.done = False
        self.on_done = on_done
        self._cids += [figure.canvas.mpl_connect("key_press_event", self.on_key),
                       figure.canvas.mpl_connect("close_event", self.on_close)]

    def on_key(self, event) -> None:
        SELECTOR_KEYS.press(event, self)

    def on_close(self, event) -> None:
        self.accept()

    def accept(self, event=None) -> None:
        """End this reference with its guides."""
        height, width = self.rgb.shape[:2]
        self.finish(ReferenceGuides(self.image_path, width, height, self.state.guides()))

    def skip(self, event=None) -> None:
        """End this reference without guides."""
        self.finish(None)

    def finish(self, result: ReferenceGuides | None) -> None:
        """End this reference with `result` (None: skipped)."""
        if self.done:
            return
        self.done, self.result = True, result
        self.disconnect()
        if self.on_done is not None:
            self.on_done()


class GuideSequence:
    """The references in turn, each in a SmartSelector: a host's sequence (`hosts.Sequence`).

    The prompts are saved after every accepted reference; `prompts()` holds those guided so far.
    `existing` (from `--edit`) pre-fills each reference's guides and keeps references not reopened.
    """

    def __init__(self, references: list[Path], backend, classes: dict[int, str], prompts_path: Path,
                 existing: PromptSet | None = None):
        self.backend, self.prompts_path = backend, prompts_path
        self.done = {r.image.resolve(): r for r in existing.references} if existing else {}
        self.order = [p.resolve() for p in references]
        self.classes = {**classes, **(existing.classes if existing else {})}
        self.session = SessionInfo(classes=self.classes)
        self.window: SmartSelector | None = None
        self._next = 0
        self._encoder = ThreadPoolExecutor(1, "embed")

    def next_window(self, make_figure) -> SmartSelector | None:
        """Record the reference shown (if any), then open the next one; None after the last."""
        if self.window is not None:
            self._record(self.window)
            self.window = None
        if self._next == len(self.order):
            self._encoder.shutdown(wait=False)
            return None
        i, path = self._next, self.order[self._next]
        self._next += 1
        self.session.guided_on = _guided_counts(self.done, exclude=path)
        rgb = read_rgb(path)
        prior = self.done.get(path)
        state = GuideState(rgb.shape[1], rgb.shape[0], prior.objects if prior else ())
        state.taken = set(self.session.guided_on)
        self.window = SmartSelector(
            make_figure(), path, rgb, self._encoder.submit(self.backend.preview, rgb), state, self.session,
            title=f"SmartSelector — {path.name} ({i + 1}/{len(self.order)})",
        )
        return self.window

    def _record(self, selector: SmartSelector) -> None:
        if not selector.done:  # the window went away without a close event
            selector.accept()
        if selector.result is None:
            log.info("skipped %s", selector.image_path.name)
            return
        self.done[selector.image_path] = selector.result
        prompts = PromptSet([self.done[p] for p in _ordered(self.done, self.order)], self.classes)
        if any(r.objects for r in prompts.references):
            save_prompts(prompts, self.prompts_path)
            log.info("saved %s (%d object(s) on %s)", self.prompts_path, len(selector.result.objects),
                     selector.image_path.name)

    def prompts(self) -> PromptSet:
        """The references with guides, in the order they were opened, then those kept from `existing`."""
        return PromptSet([self.done[p] for p in _ordered(self.done, self.order) if self.done[p].objects],
                         self.classes)


def run_selector(
    references: list[Path],
    backend,
    classes: dict[int, str],
    prompts_path: Path,
    existing: PromptSet | None = None,
    host=None,
) -> PromptSet:
    """Open each reference in a SmartSelector window (a `GuideSequence`) in `host` (default: a
    `DesktopHost`); save the prompts after every accepted one; return them."""
    from .hosts import DesktopHost

    host = host or DesktopHost()
    host.open()
    sequence = GuideSequence(references, backend, classes, prompts_path, existing)
    host.run(sequence)
    return sequence.prompts()


def _ordered(done: dict[Path, ReferenceGuides], order: list[Path]) -> list[Path]:
    """References in the order they were opened, then those kept from the prompts file."""
    return [p for p in order if p in done] + [p for p in done if p not in order]


def _guided_counts(done: dict[Path, ReferenceGuides], exclude: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for path, ref in done.items():
        if path != exclude:
            for obj in ref.objects:
                counts[obj.id] = counts.get(obj.id, 0) + 1
    return counts
