"""`python main.py review`: the review window, the batch's targets worst first, each on a `GuideCanvas`.

The window is a view of `labeler.review.session.Review`: its keys (`keys.REVIEW_KEYS`) only call accept,
exclude, correct and teach, and move between targets. Outside fix mode it shows the predicted masks; `F`
starts a fix from them, with the SmartSelector's guide controls (`keys.GUIDE_KEYS`): brush paint/erase
edits the masks directly, a box or points re-prompt SAM 2 on this target for the current ID (live
preview), paint and erase apply on top. `Enter` saves the correction, `Esc` drops it.

With `--audit N` (`audit=` here) the window shows an audit's targets instead, in their random order,
starting at the first not reviewed yet; the title counts them (`audit 7/30`). The title names the
corrected target the quality report would teach (`teach? NAME`), where there is one.

Usage: `python main.py review [--output DIR] [--audit N [--seed S]] [--clear [NAME ...]] [--no-relabel]`.
"""

from __future__ import annotations

import argparse
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..prompts.guide_state import GuideState
from ..review.session import Review
from ..utils.images import read_rgb
from .canvas import GuideCanvas, SessionInfo
from .hosts import OneWindow
from .keys import GUIDE_KEYS, REVIEW_KEYS

log = logging.getLogger("labeler")


class ReviewWindow:
    """The review of the batch's targets in one figure, one target at a time; `show(index)` moves to another.

    Each target is a `GuideCanvas` on the figure (`canvas`), replaced by a new one for the next target.
    Its keys are `REVIEW_KEYS`; in fix mode the fix's Enter and Esc, and the SmartSelector's guide keys.
    `on_done` is called once when the review ends (Q, or the figure closed).
    """

    def __init__(self, figure, review: Review, backend, encoder: ThreadPoolExecutor | None = None,
                 audit: list | None = None, teach_hint: str | None = None):
        """audit: an audit's records (`Review.audit`), shown in their order instead of worst first.
        teach_hint: the corrected target the quality report suggests teaching, named in the title."""
        self.fig = figure
        self.review = review
        self.backend = backend
        self.encoder = encoder
        self.audit = audit is not None
        self.teach_hint = teach_hint
        self.names = [r.name for r in (audit if audit is not None else review.order())]
        self.index = next((i for i, r in enumerate(audit) if not r.review), 0) if audit else 0
        self.fixing = False
        self.teach_pending: set[str] = set()
        self.ended = False
        self.on_done = None
        self.canvas = self._open()
        self._cids = [figure.canvas.mpl_connect("key_press_event", self.on_key),
                      figure.canvas.mpl_connect("close_event", self.on_close)]

    # ----- one target ---------------------------------------------------------------------------
    def _open(self) -> GuideCanvas:
        """The canvas of target `index`: its predicted masks, which guides start from, no guides yet."""
        self.record = self.review.record(self.names[self.index])
        self.predicted = {d.id: d for d in self.review.detections(self.record)}
        rgb = read_rgb(self.record.path)
        ids = sorted(set(self.predicted) | set(self.review.prompts.object_ids))
        state = GuideState(rgb.shape[1], rgb.shape[0], current_id=ids[0] if ids else 1)
        # On a thread in the window; at once without one (tests, scripts).
        preview = self.encoder.submit(self.backend.preview, rgb) if self.encoder else self.backend.preview(rgb)
        prior = {d.id: d.mask if d.present else np.zeros_like(d.mask) for d in self.predicted.values()}
        canvas = GuideCanvas(self.fig, rgb, preview, state, SessionInfo(classes=dict(self.review.prompts.classes)),
                             title=self._title(), keys=REVIEW_KEYS, prior=prior, slots=0,
                             slot_note=functools.partial(self._slot_note, state))
        canvas.guiding = False  # outside fix mode the mouse changes nothing (and hovering redraws nothing)
        return canvas

    def _title(self) -> str:
        c = self.review.counts()
        mark = "" if not self.record.review else f" [{self.record.review_state}]"
        look = " · look again: new object IDs" if self.record.review and self.review.needs_look(self.record) else ""
        fixing = " · FIX: Enter saves, Esc drops" if self.fixing else ""
        where = f"{self.index + 1}/{len(self.names)}"
        if self.audit:
            left = sum(self.review.record(n).review is None for n in self.names)
            where = f"audit {where}" + (", audit done: Q ends, then python main.py quality" if not left else "")
        hint = f" · teach? {self.teach_hint}" if self.teach_hint else ""
        return (f"Review — {self.record.name}{mark} ({where}) · reviewed "
                f"{c['reviewed']}/{c['targets']} · {c['corrected']} corrected · {c['taught']} taught{look}{hint}"
                f"{fixing}")

    def _slot_note(self, state: GuideState, obj_id: int) -> str:
        """An ID's second sidebar line: found or not, the score, whether the fix edited it."""
        d = self.predicted.get(obj_id)
        if d is None:
            return "not labeled"
        edited = " · edited" if state.object(obj_id) is not None else ""
        return f"{'found' if d.present else 'not found'} · score {d.score:.3f}{edited}"

    def show(self, index: int) -> None:
        """Move to target `index` (clamped), in the same figure."""
        self.canvas.disconnect()
        self.index = min(max(index, 0), len(self.names) - 1)
        self.fixing = False
        self.canvas = self._open()
        self.fig.canvas.draw_idle()

    @property
    def done(self) -> bool:
        """Whether the review ended (what a host waits for)."""
        return self.ended

    @property
    def ax(self):
        """The image axes of the target shown."""
        return self.canvas.ax

    @property
    def state(self) -> GuideState:
        """The guides drawn on the target shown (in fix mode)."""
        return self.canvas.state

    @property
    def title_text(self):
        return self.canvas.title_text

    def shown_mask(self, obj_id: int) -> np.ndarray:
        """(H, W) bool: the mask shown for `obj_id`, what a saved fix records."""
        return self.canvas.shown_mask(obj_id)

    # ----- keys: review actions outside fix mode; in it the fix's own and the guide keys -----------
    def on_key(self, event) -> None:
        if not self.fixing:
            REVIEW_KEYS.press(event, self, self.canvas)
        elif not REVIEW_KEYS.press(event, self, mode="fix"):
            GUIDE_KEYS.press(event, self.canvas)  # Q ends the review only outside fix mode

    def start_fix(self, event=None) -> None:
        self.fixing = self.canvas.guiding = True
        self.canvas.repaint.set_text(self.canvas.title_text, self._title())

    def accept_target(self, event=None) -> None:
        self.review.accept(self.record.name)
        self._apply_teach()
        self.show(self.index + 1)

    def exclude(self, event=None) -> None:
        self.review.exclude(self.record.name)
        self.show(self.index + 1)

    def next(self, event=None) -> None:
        self.show(self.index + 1)

    def previous(self, event=None) -> None:
        self.show(self.index - 1)

    def save_fix(self, event=None) -> None:
        """Save the shown masks as the target's final masks (an ID erased completely is absent)."""
        masks = {obj_id: self.shown_mask(obj_id) for obj_id in self.canvas.object_ids()}
        self.review.correct(self.record.name, masks)
        self._apply_teach()
        self.show(self.index + 1)

    def drop_fix(self, event=None) -> None:
        self.show(self.index)

    def toggle_teach(self, event=None) -> None:
        name = self.record.name
        if self.record.review and self.record.review_state != "excluded":
            self.review.teach(name, not self.record.review.get("teach"))
            self.record = self.review.record(name)
            taught = self.record.review.get("teach")
        else:  # taught once the person accepts or corrects it
            self.teach_pending ^= {name}
            taught = name in self.teach_pending
        self.canvas.repaint.set_text(self.canvas.title_text, self._title())
        self.canvas.repaint.set_text(self.canvas.status_text,
                                     "also a reference: yes" if taught else "also a reference: no")

    def _apply_teach(self) -> None:
        if self.record.name in self.teach_pending:
            self.teach_pending.discard(self.record.name)
            self.review.teach(self.record.name)

    def end(self, event=None) -> None:
        """End the review (everything is saved as it goes)."""
        if self.ended:
            return
        self.ended = True
        self.canvas.disconnect()
        for cid in self._cids:
            self.fig.canvas.mpl_disconnect(cid)
        if self.on_done is not None:
            self.on_done()

    def on_close(self, event) -> None:
        self.end()


def review_command(argv: list[str], config: dict, host=None) -> int:
    """`python main.py review`: the window over an output folder, in `host` (default: a `DesktopHost`);
    returns the exit code."""
    from .. import defaults
    from ..errors import UsageError
    from ..models.backend import model_names
    from ..models.common import DEVICES, PRECISIONS
    from .hosts import WEB_DEFAULTS, WEB_OPTIONS, host_for

    p = argparse.ArgumentParser(prog="main.py review", description="Review a labeled output folder, worst first: "
                                "accept, fix, exclude, teach. Settings come from the folder; options override them.")
    p.add_argument("--output", default=config.get("OUTPUT_DIR", "output"), help="output folder (default: %(default)s)")
    p.add_argument("--targets", help="target folder (default: the one the folder's manifest records)")
    p.add_argument("--clear", nargs="*", metavar="NAME", help="drop the reviews (all, or of these target files)")
    p.add_argument("--no-relabel", action="store_true", help="after teaching, don't relabel the unreviewed targets")
    p.add_argument("--audit", type=int, metavar="N", help="an audit: N unreviewed targets drawn at random, in random "
                   "order (an unfinished audit resumes); then `python main.py quality`")
    p.add_argument("--seed", type=int, help="the audit's random seed (default: a new one, recorded in the manifest)")
    p.add_argument("--model", choices=model_names(), help=f"model (default: the folder's, else {defaults.MODEL})")
    p.add_argument("--checkpoint", metavar="PATH", help="checkpoint, or 'none' (default: the folder's)")
    p.add_argument("--image-size", type=int, metavar="N", help="model input size (default: the folder's)")
    p.add_argument("--device", choices=list(DEVICES), help="(default: the folder's)")
    p.add_argument("--precision", choices=list(PRECISIONS), help="(default: the folder's)")
    for name, (flag, kwargs) in WEB_OPTIONS.items():
        default = config.get(name, WEB_DEFAULTS[name])
        p.add_argument(flag, dest=name.lower(), default=default, **{**kwargs, "help": f"{kwargs['help']} (default: {default})"})
    args = p.parse_args(argv)
    try:
        if args.audit is not None and args.audit < 1:
            raise UsageError(f"--audit {args.audit}: must be at least 1")
        if args.clear is not None:
            with Review.open(args.output, args.targets) as review:
                log.info("dropped %d review(s)", review.clear(args.clear or None))
            return 0
        host = host or host_for(args.web, args.web_host, args.web_port)
        host.open()
        with host.reporting():  # a web page shows the review's log lines, the relabel's progress, any error
            return _review(args, host)
    except UsageError as e:
        log.error("error: %s", e)
        return 2


def _teach_hint(review: Review, backend) -> str | None:
    """The corrected target least like any reference, from the feature cache's entries (or None)."""
    from ..review.audit import teach_suggestion

    if not any(r.review_state == "corrected" for r in review.records()):
        return None
    try:
        return teach_suggestion(review, backend, encode_missing=False)["target"]  # no encoding before the window
    except Exception as e:  # a suggestion is never worth a review that doesn't open
        log.warning("no teach suggestion: %s", e)
        return None


def _review(args, host) -> int:
    from .. import defaults
    from ..batch.pipeline import label_batch
    from ..models.backend import ModelSettings, build_backend
    from ..models.common import resolve_device

    with Review.open(args.output, args.targets) as review:
        s = review.settings
        settings = review.model_settings(args.model, args.checkpoint, args.image_size, args.device,
                                         args.precision)
        if not review.records():
            log.info("nothing to review in %s", args.output)
            return 0
        audit = review.audit(args.audit, args.seed) if args.audit is not None else None  # saved before it shows
        backend = build_backend(ModelSettings(settings["model"], settings["checkpoint"], settings["image_size"],
                                              resolve_device(settings["device"]).type, settings["precision"]))
        hint = _teach_hint(review, backend)
        encoder = ThreadPoolExecutor(1, "embed")
        host.run(OneWindow(lambda figure: ReviewWindow(figure, review, backend, encoder, audit, hint)))
        encoder.shutdown(wait=False)
        log.info("reviewed %d of %d targets", review.counts()["reviewed"], review.counts()["targets"])
        if audit is not None:
            left = sum(review.record(r.name).review is None for r in audit)
            log.info("audit: %d of %d reviewed%s; its figures: python main.py quality --output %s", len(audit) - left,
                     len(audit), f" (python main.py review --audit {args.audit} resumes it)" if left else "",
                     args.output)
        prompts = review.finish()
    if prompts is None:
        return 0
    if args.no_relabel:
        run = {**settings, "memory": s.get("memory"), "threshold": s.get("threshold")}
        options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in run.items() if v is not None)
        log.info("the unreviewed targets are not relabeled yet; to relabel them: python main.py --headless "
                 "--output %s --targets %s %s", args.output, review.targets_dir, options)
        return 0
    summary = label_batch(prompts, review.targets_dir, args.output, memory=s.get("memory", defaults.MEMORY),
                          threshold=s.get("threshold", defaults.THRESHOLD), formats=s.get("formats", defaults.FORMATS),
                          backend=backend, on_progress=host.progress, **settings)
    return summary.exit_code
