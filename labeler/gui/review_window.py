"""`python main.py review`: the review window, a SmartSelector over the batch's targets, worst first.

The window is a view of `labeler.review.session.Review`: its keys only call accept, exclude, correct and
teach, and move between targets. Outside fix mode it shows the predicted masks; `F` starts a fix
from them, with the SmartSelector's own controls: brush paint/erase edits the masks directly, a
box or points re-prompt SAM 2 on this target for the current ID (live preview), paint and erase
apply on top. `Enter` saves the correction, `Esc` drops it.

Usage: `python main.py review [--output DIR] [--clear [NAME ...]] [--no-relabel]`.
"""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..prompts.guide_state import GuideState
from ..review.session import Review
from ..types.guides import ObjectGuides
from ..utils.images import read_rgb
from .selector import SessionInfo, SmartSelector, use_window_backend

log = logging.getLogger("labeler")

REVIEW_CONTROLS = ("Enter/A: accept · F: fix · X: exclude · ←/→: previous/next · T: also a reference · "
                   "+/-/0: zoom · Q: end review · H: help")
REVIEW_HELP = """Review controls

Enter or A           accept the target as labeled
F                    fix it: the SmartSelector's guide controls
  Enter / Esc        save the correction / drop it
X                    exclude it (left out of the exports)
Left / Right         previous / next target
T                    also use it as a reference (taught when the review ends)
+ - 0, shift+arrows  zoom at the cursor, out, whole image; pan
Q or closing         end the review (everything is saved)
H                    this help"""


class ReviewWindow(SmartSelector):
    """The review of one target in the figure; `show(index)` moves to another target in place."""

    CONTROLS, HELP = REVIEW_CONTROLS, REVIEW_HELP

    def __init__(self, figure, review: Review, backend, encoder: ThreadPoolExecutor | None = None):
        self.review = review
        self.backend = backend
        self.encoder = encoder
        self.names = [r.name for r in review.order()]
        self.index = 0
        self.fixing = False
        self.teach_pending: set[str] = set()
        self.ended = False
        self._open(figure)

    # ----- one target ---------------------------------------------------------------------------
    @property
    def guiding(self) -> bool:
        """Outside fix mode the mouse changes nothing (and hovering redraws nothing)."""
        return self.fixing

    def _open(self, figure) -> None:
        self.record = self.review.record(self.names[self.index])
        self.predicted = {d.id: d for d in self.review.detections(self.record)}
        rgb = read_rgb(self.record.path)
        ids = sorted(set(self.predicted) | set(self.review.prompts.object_ids))
        state = GuideState(rgb.shape[1], rgb.shape[0], current_id=ids[0] if ids else 1)
        # On a thread in the window; at once without one (tests, scripts).
        preview = self.encoder.submit(self.backend.preview, rgb) if self.encoder else self.backend.preview(rgb)
        session = SessionInfo(classes=dict(self.review.prompts.classes))
        super().__init__(figure, self.record.path, rgb, preview, state, session, title=self._title())

    def _title(self) -> str:
        c = self.review.counts()
        mark = "" if not self.record.review else f" [{self.record.review_state}]"
        look = " · look again: new object IDs" if self.record.review and self.review.needs_look(self.record) else ""
        fixing = " · FIX: Enter saves, Esc drops" if self.fixing else ""
        return (f"Review — {self.record.name}{mark} ({self.index + 1}/{len(self.names)}) · reviewed "
                f"{c['reviewed']}/{c['targets']} · {c['corrected']} corrected · {c['taught']} taught{look}{fixing}")

    def show(self, index: int) -> None:
        """Move to target `index` (clamped), in the same figure."""
        self.disconnect()
        self.index = min(max(index, 0), len(self.names) - 1)
        self.fixing = False
        self._open(self.fig)
        self.fig.canvas.draw_idle()

    # ----- what is drawn: the predicted masks, and in fix mode the guides over them ---------------
    def _object_ids(self) -> list[int]:
        return sorted(set(self.predicted) | set(self.state.ids()))

    def _object(self, obj_id: int) -> ObjectGuides:
        return self.state.object(obj_id) or ObjectGuides(obj_id)

    def _sam_mask(self, obj: ObjectGuides) -> np.ndarray | None:
        """A box or points re-prompt SAM 2 on this target; without them, the predicted mask is the start."""
        if obj.has_prompt:
            return super()._sam_mask(obj)
        d = self.predicted.get(obj.id)
        return d.mask if d is not None and d.present else np.zeros(self.rgb.shape[:2], dtype=bool)

    def _sidebar_ids(self) -> list[int]:
        return sorted(set(self.predicted) | set(self.state.ids()) | {self.state.current_id})

    def _sidebar_lines(self, obj_id: int) -> tuple[str, str]:
        name = self.session.classes.get(obj_id, "")
        d = self.predicted.get(obj_id)
        if d is None:
            return f"ID {obj_id}  {name}".rstrip(), "not labeled"
        found = "found" if d.present else "not found"
        edited = " · edited" if self.state.object(obj_id) is not None else ""
        return f"ID {obj_id}  {name}".rstrip(), f"{found} · score {d.score:.3f}{edited}"

    # ----- keys: review actions outside fix mode, the SmartSelector's inside ------------------------
    def on_key(self, event) -> None:
        key = event.key or ""
        if self.fixing:
            if key == "enter":
                self.save_fix()
            elif key == "escape":
                self.drop_fix()
            elif key != "q":  # Q ends the review only outside fix mode
                super().on_key(event)
            return
        if key in ("enter", "a"):
            self.accept_target()
        elif key == "f":
            self.fixing = True
            self._set_text(self.title_text, self._title())
        elif key == "x":
            self.review.exclude(self.record.name)
            self.show(self.index + 1)
        elif key == "right":
            self.show(self.index + 1)
        elif key == "left":
            self.show(self.index - 1)
        elif key == "t":
            self.toggle_teach()
        elif key in ("q", "escape"):
            self.end()
        elif key in ("h", "+", "=", "-", "0") or key.startswith("shift+"):
            super().on_key(event)  # help, zoom and pan

    def accept_target(self) -> None:
        self.review.accept(self.record.name)
        self._apply_teach()
        self.show(self.index + 1)

    def save_fix(self) -> None:
        """Save the shown masks as the target's final masks (an ID erased completely is absent)."""
        masks = {obj_id: self.shown_mask(obj_id) for obj_id in self._object_ids()}
        self.review.correct(self.record.name, masks)
        self._apply_teach()
        self.show(self.index + 1)

    def drop_fix(self) -> None:
        self.show(self.index)

    def toggle_teach(self) -> None:
        name = self.record.name
        if self.record.review and self.record.review_state != "excluded":
            self.review.teach(name, not self.record.review.get("teach"))
            self.record = self.review.record(name)
            taught = self.record.review.get("teach")
        else:  # taught once the person accepts or corrects it
            self.teach_pending ^= {name}
            taught = name in self.teach_pending
        self._set_text(self.title_text, self._title())
        self._set_text(self.status_text, "also a reference: yes" if taught else "also a reference: no")

    def _apply_teach(self) -> None:
        if self.record.name in self.teach_pending:
            self.teach_pending.discard(self.record.name)
            self.review.teach(self.record.name)

    def end(self) -> None:
        self.ended = True
        self.finish(None)

    def on_close(self, event) -> None:
        self.ended = True


def review_command(argv: list[str], config: dict) -> int:
    """`python main.py review`: the window over an output folder; returns the exit code."""
    from ..errors import UsageError
    from ..models.backend import model_names

    p = argparse.ArgumentParser(prog="main.py review", description="Review a labeled output folder, worst first: "
                                "accept, fix, exclude, teach. Settings come from the folder; options override them.")
    p.add_argument("--output", default=config.get("OUTPUT_DIR", "output"), help="output folder (default: %(default)s)")
    p.add_argument("--targets", help="target folder (default: the one the folder's manifest records)")
    p.add_argument("--clear", nargs="*", metavar="NAME", help="drop the reviews (all, or of these target files)")
    p.add_argument("--no-relabel", action="store_true", help="after teaching, don't relabel the unreviewed targets")
    p.add_argument("--model", choices=model_names(), help="model (default: the folder's)")
    p.add_argument("--checkpoint", metavar="PATH", help="checkpoint, or 'none' (default: the folder's)")
    p.add_argument("--image-size", type=int, metavar="N", help="model input size (default: the folder's)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="(default: the folder's)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="(default: the folder's)")
    args = p.parse_args(argv)
    try:
        if args.clear is not None:
            with Review.open(args.output, args.targets) as review:
                log.info("dropped %d review(s)", review.clear(args.clear or None))
            return 0
        use_window_backend()
        return _review(args)
    except UsageError as e:
        log.error("error: %s", e)
        return 2


def _review(args) -> int:
    import matplotlib.pyplot as plt

    from .. import defaults
    from ..batch.pipeline import label_batch
    from ..models.backend import ModelSettings, build_backend
    from ..models.common import resolve_device

    with Review.open(args.output, args.targets) as review:
        s = review.settings
        settings = {name: getattr(args, name) or s.get(name, default) for name, default in
                    (("model", defaults.MODEL), ("checkpoint", defaults.CHECKPOINT), ("image_size", defaults.IMAGE_SIZE),
                     ("device", defaults.DEVICE), ("precision", defaults.PRECISION))}
        if not review.records():
            log.info("nothing to review in %s", args.output)
            return 0
        backend = build_backend(ModelSettings(settings["model"], settings["checkpoint"], settings["image_size"],
                                              resolve_device(settings["device"]).type, settings["precision"]))
        encoder = ThreadPoolExecutor(1, "embed")
        fig = plt.figure(figsize=(13, 7.5))
        ReviewWindow(fig, review, backend, encoder)  # its handlers keep it alive while the window is open
        plt.show(block=True)
        encoder.shutdown(wait=False)
        log.info("reviewed %d of %d targets", review.counts()["reviewed"], review.counts()["targets"])
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
                          backend=backend, **settings)
    return summary.exit_code
