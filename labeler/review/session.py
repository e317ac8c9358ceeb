"""Review and correct a labeled output folder: accept, correct, exclude, teach, clear.

A person's review is recorded in the manifest, in a field of its own (the target's labeling status
stays as it is): `{"state": "accepted" | "corrected" | "excluded", "time": ISO 8601, "ids": [...]}`.
A reviewed target is never labeled again (until its review is cleared); an excluded one is left
out of the exports. Every change is saved at once: the target's files, manifest.json and
results.csv, each written atomically, so a crash loses at most the change being made.

Teaching: a reviewed target marked with `teach` becomes a reference of the folder's prompts.json
when the review finishes, guided by its final masks alone (paint = the mask), and an object ID
absent from it by an explicit empty mask (`absent`), so the batch learns its false positives.

What the review says of the prediction is recorded with it, per object ID, at the moment of the review
(the predicted masks are still on disk): `"quality": {"<id>": {"iou", "predicted", "final", "score",
"logit"}}` and the run's `threshold`; accepted means IoU 1. An audit (`audit(n, seed=)`) is n labeled,
unreviewed targets drawn at random, recorded in the manifest's `audits` before the first is shown, so a
crashed audit resumes with the same sample; `labeler/review/audit.py` turns the audited reviews into
quality.json.

Usage:
    with Review.open("output") as review:
        for record in review.order(): ...               # worst first, reviewed last
        for record in review.audit(30, seed=1): ...     # or a random audit (resumed where it stopped)
        review.accept("t1.jpg")
        review.correct("t2.jpg", {1: mask_hw_bool})       # final masks by object ID
        review.teach("t2.jpg")
        taught = review.finish()                          # the prompts with the taught references, or None
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import secrets
from pathlib import Path

import numpy as np

from .. import defaults
from ..errors import UsageError
from ..outputs.folder import OutputFolder, TargetRecord
from ..outputs.writers import TargetWriter, save_records
from ..prompts.prompt_set import PromptSet
from ..types.detections import Detection
from ..types.guides import ObjectGuides, ReferenceGuides, class_name
from ..utils.images import list_images, read_rgb, upright_size
from .quality import mask_iou

log = logging.getLogger("labeler")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _min_score(record: TargetRecord) -> float:
    scores = [s for _, s in record.present]
    return min(scores) if scores else 0.0


class Review:
    """The reviews of one output folder, with its prompts, targets and settings read from the folder."""

    def __init__(self, output: str | os.PathLike, targets: str | os.PathLike | None = None):
        self.folder = OutputFolder(output)
        if not self.folder.manifest_json.is_file() or not self.folder.prompts_json.is_file():
            raise UsageError(f"{self.folder.root} holds no labeled batch (no manifest.json or prompts.json): "
                             "run the batch first")
        self.prompts = PromptSet.load(self.folder.prompts_json)
        self.manifest = self.folder.manifest()
        self.settings = dict(self.manifest.settings)
        if targets is None:
            if "targets" not in self.settings:
                raise UsageError(f"{self.folder.manifest_json} does not say where the targets are: pass --targets")
            targets = self.folder.root / self.settings["targets"]
        if not Path(targets).is_dir():
            raise UsageError(f"target folder {targets} does not exist")
        self.targets = list_images(targets)
        self.targets_dir = Path(targets)

    @classmethod
    @contextlib.contextmanager
    def open(cls, output: str | os.PathLike, targets: str | os.PathLike | None = None):
        """The review of `output`, holding the folder's lock (one writing process per folder)."""
        review = cls(output, targets)
        with review.folder.lock():
            review.manifest = review.folder.manifest()  # as it is now that no one else writes
            yield review

    # ----- reading -----------------------------------------------------------------------------
    def records(self) -> list[TargetRecord]:
        """The labeled targets (excluded ones too), in target order."""
        return [r for r in self.manifest.records(self.targets) if r.status == "labeled"]

    def record(self, name: str) -> TargetRecord:
        target = self.targets_dir / name
        record = self.manifest.get(target)
        if record is None or record.status != "labeled":
            raise UsageError(f"{name} is not a labeled target of {self.folder.root}")
        return record

    def needs_look(self, record: TargetRecord) -> bool:
        """Unreviewed, or reviewed before the prompts gained object IDs it was not labeled for."""
        return not record.review or bool(set(self.prompts.object_ids) - set(record.review.get("ids", ())))

    def order(self) -> list[TargetRecord]:
        """Worst first, as report.png orders them (nothing found first, then lowest object score);
        reviewed targets last (those reviewed before new object IDs count as not reviewed)."""
        def key(record: TargetRecord) -> tuple:
            look = self.needs_look(record)
            return (not look, _min_score(record) if look else 0.0)

        return sorted(self.records(), key=key)

    def detections(self, record: TargetRecord) -> list[Detection]:
        """The target's objects with their masks read back from id_masks/ (empty masks where absent)."""
        size = upright_size(record.path)[::-1]
        out = []
        for o in record.objects:
            mask = self.folder.read_id_mask(record.stem, o.id) if o.present else None
            mask = mask if mask is not None else np.zeros(size, dtype=bool)
            out.append(Detection(o.id, o.logit, mask, o.present, class_name(self.prompts.classes, o.id)))
        return out

    def model_settings(self, model=None, checkpoint=None, image_size=None, device=None, precision=None) -> dict:
        """The model to review with (`ModelSettings`' fields but the device as named): those given, else the
        folder's (its manifest's settings), else the defaults."""
        given = {"model": model, "checkpoint": checkpoint, "image_size": image_size, "device": device,
                 "precision": precision}
        return {name: given[name] or self.settings.get(name, default) for name, default in
                (("model", defaults.MODEL), ("checkpoint", defaults.CHECKPOINT), ("image_size", defaults.IMAGE_SIZE),
                 ("device", defaults.DEVICE), ("precision", defaults.PRECISION))}

    def counts(self) -> dict[str, int]:
        """reviewed, corrected, excluded, taught, targets."""
        records = self.records()
        states = [r.review_state for r in records]
        return {"targets": len(records), "reviewed": sum(s != "unreviewed" for s in states),
                "corrected": states.count("corrected"), "excluded": states.count("excluded"),
                "taught": sum(bool(r.review and r.review.get("teach")) for r in records)}

    # ----- changes, each saved at once ------------------------------------------------------------
    def _save(self, record: TargetRecord, state: str, quality: dict | None = None) -> None:
        teach = bool(record.review and record.review.get("teach")) and state != "excluded"
        review = {"state": state, "time": _now(), "ids": self.prompts.object_ids, "teach": teach}
        if quality is not None:
            review["quality"] = quality
            review["threshold"] = (record.review or {}).get("threshold", self.settings.get("threshold",
                                                                                      defaults.THRESHOLD))
        record.review = review
        self.manifest.record(self.manifest.entries[record.name]["fingerprint"], record)
        save_records(self.folder, self.manifest, self.targets, self.prompts.classes)

    def accept(self, name: str) -> None:
        """The target is right as labeled: every object's prediction is its final mask (IoU 1)."""
        record = self.record(name)
        quality = self._prior_quality(record)
        if quality is None:
            quality = {str(o.id): {"iou": 1.0, "predicted": o.present, "final": o.present, "score": o.score,
                                   "logit": o.logit} for o in record.objects}
        self._save(record, "accepted", quality)

    @staticmethod
    def _prior_quality(record: TargetRecord) -> dict | None:
        """The quality an earlier review recorded (the prediction is no longer on disk after a correction)."""
        return dict(record.review["quality"]) if record.review and "quality" in record.review else None

    def exclude(self, name: str) -> None:
        """A bad or irrelevant image: left out of the exports, never labeled again."""
        self._save(self.record(name), "excluded")

    def correct(self, name: str, masks: dict[int, np.ndarray]) -> None:
        """Final (H, W) bool masks by object ID (IDs not given keep their masks); the target's files are
        rewritten from them. An object is present when its mask is not empty; it keeps SAM 2's logit."""
        record = self.record(name)
        rgb = read_rgb(record.path)
        detections = []
        by_id = {d.id: d for d in self.detections(record)}  # the masks on disk: the prediction, before this
        prior = self._prior_quality(record) or {}
        quality = {}
        for obj_id in sorted(set(by_id) | set(masks)):
            mask = np.asarray(masks[obj_id], dtype=bool) if obj_id in masks else by_id[obj_id].mask
            if mask.shape != rgb.shape[:2]:
                raise ValueError(f"object {obj_id}: mask shape {mask.shape} is not the image's {rgb.shape[:2]}")
            logit = by_id[obj_id].logit if obj_id in by_id else 0.0
            name = class_name(self.prompts.classes, obj_id)
            detections.append(Detection(obj_id, logit, mask, bool(mask.any()), name))
            before = by_id[obj_id].mask if obj_id in by_id else np.zeros_like(mask)
            was = prior.get(str(obj_id))
            if was is not None and was["iou"] < 1.0:
                # Corrected before: the prediction is gone from disk; keep what that review measured.
                quality[str(obj_id)] = {**was, "final": bool(mask.any())}
            elif was is not None:  # the disk still holds the prediction
                quality[str(obj_id)] = {**was, "iou": mask_iou(before, mask), "final": bool(mask.any())}
            else:
                d = by_id.get(obj_id)
                quality[str(obj_id)] = {"iou": mask_iou(before, mask), "predicted": bool(d and d.present),
                                        "final": bool(mask.any()), "score": d.score if d else None,
                                        "logit": float(d.logit) if d else None}
        TargetWriter(self.folder, self.prompts.classes).write(record.stem, rgb, detections)
        record.objects = TargetRecord.from_detections(record.path, record.stem, detections).objects
        self._save(record, "corrected", quality)

    def teach(self, name: str, on: bool = True) -> None:
        """Mark (or unmark) a reviewed target to become a reference when the review finishes."""
        record = self.record(name)
        if not record.review or record.review_state == "excluded":
            raise UsageError(f"{name}: accept or correct it before teaching it")
        record.review = {**record.review, "teach": on}
        self.manifest.record(self.manifest.entries[record.name]["fingerprint"], record)
        self.manifest.save()

    def clear(self, names: list[str] | None = None) -> int:
        """Drop the reviews of the named targets (all when None, and the audits with them); returns how many
        were dropped. Their files stay until the next batch relabels them (their fingerprint is kept, so:
        `--force`). A cleared target of an audit's sample comes back in that audit."""
        if names is None:
            self.manifest.audits = []
        dropped = 0
        for record in self.records():
            if record.review and (names is None or record.name in names):
                record.review = None
                self.manifest.record("cleared", record)  # no fingerprint matches: the next batch relabels it
                dropped += 1
        save_records(self.folder, self.manifest, self.targets, self.prompts.classes)
        return dropped

    # ----- the audit: a random sample, resumed after a crash ----------------------------------------
    def open_audit(self) -> dict | None:
        """The latest audit, while a target of its sample is still to review; else None."""
        if not self.manifest.audits:
            return None
        audit = self.manifest.audits[-1]
        return audit if any(r.review is None for r in self._sample(audit)) else None

    def _sample(self, audit: dict) -> list[TargetRecord]:
        by_name = {r.name: r for r in self.records()}
        return [by_name[n] for n in audit["sample"] if n in by_name]

    def audit(self, n: int, seed: int | None = None) -> list[TargetRecord]:
        """An audit: `n` labeled targets not reviewed yet, drawn at random (seeded; a new seed when None),
        in random order. The sample and seed are saved in the manifest at once; while its targets are not
        all reviewed, the same audit is returned (resumed), whatever `n` and `seed`."""
        audit = self.open_audit()
        if audit is not None:
            if n != audit["size"] or seed not in (None, audit["seed"]):
                log.info("resuming the audit begun %s (%d targets, seed %d); finish it before another",
                         audit["time"], audit["size"], audit["seed"])
            return self._sample(audit)
        if n < 1:
            raise UsageError(f"audit size {n}: must be at least 1")
        pool = [r for r in self.records() if r.review is None]
        if not pool:
            raise UsageError(f"every labeled target of {self.folder.root} is reviewed: nothing left to audit")
        seed = secrets.randbits(32) if seed is None else int(seed)
        order = np.random.default_rng(seed).permutation(len(pool))[:n]
        sample = [pool[i].name for i in order]
        if n > len(pool):
            log.info("audit of %d: only %d unreviewed targets, auditing them all", n, len(pool))
        self.manifest.audits.append({"seed": seed, "size": n, "pool": len(pool), "time": _now(),
                                     "sample": sample})
        self.manifest.save()
        return self._sample(self.manifest.audits[-1])

    def audited(self) -> set[str]:
        """The names of every audit's sample."""
        return {name for audit in self.manifest.audits for name in audit["sample"]}

    def finish(self) -> PromptSet | None:
        """Append the targets marked to teach to the folder's prompts.json; returns the new prompts, or None."""
        taught = [r for r in self.records() if r.review and r.review.get("teach") and not r.review.get("taught")]
        if not taught:
            return None
        references = list(self.prompts.references)
        for record in taught:
            references.append(self.reference(record))
            record.review = {**record.review, "taught": True}
            self.manifest.record(self.manifest.entries[record.name]["fingerprint"], record)
            self.manifest.settings.setdefault("taught", []).append(os.path.abspath(record.path))
        prompts = PromptSet(references, self.prompts.classes)
        prompts.save(self.folder.prompts_json)
        self.manifest.save()
        self.prompts = prompts
        log.info("taught %d reference(s): %s", len(taught), ", ".join(r.name for r in taught))
        return prompts

    def reference(self, record: TargetRecord) -> ReferenceGuides:
        """The target as a reference: each object ID of the prompts guided by its final mask alone,
        an ID with no pixel on it by an explicit empty mask."""
        width, height = upright_size(record.path)
        objects = []
        for obj_id in self.prompts.object_ids:
            mask = self.folder.read_id_mask(record.stem, obj_id)
            present = mask is not None and mask.any()
            objects.append(ObjectGuides(obj_id, paint=mask) if present else ObjectGuides(obj_id, absent=True))
        return ReferenceGuides(record.path, width, height, objects)
