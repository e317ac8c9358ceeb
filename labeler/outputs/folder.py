"""The output folder: every path and file name in it, output stems, the manifest of typed records, the lock.

Layout (under the folder): `id_masks/<stem>_id<k>.png`, `masks/<stem>.png`, `labels/<stem>.png`,
`overlays/<stem>.jpg`, `bboxes/<stem>.txt`, `results.csv`, `manifest.json`, `prompts.json`,
`report.png`, `quality.json` (`python main.py quality`), `coco.json`, `yolo/`, `meshes/<stem>_id<k>.glb|.ply`.

`manifest.json` records the run's settings and, per target, the fingerprint it was labeled with,
its file's content hash and its results as typed records (full-precision logits): a rerun skips
targets labeled with the same fingerprint, and exports, the review sheet and meshes read the
records back. `results.csv` is one rendering of them. A review's audits (`python main.py review
--audit N`) are one more top-level field, `audits`, written only once there is one (a plain batch's
manifest has none). Version 1 manifests (results.csv rows) are still read. Nothing in it depends on
where the folder or the targets lie, or on file times, so a batch resumes on another machine or after
the folder moved.

Usage:
    folder = OutputFolder("output")
    with folder.lock():                       # one writing process per folder
        manifest = folder.manifest()
        ...; manifest.record(target, fingerprint, TargetRecord(...)); manifest.save()
    records = folder.labeled(targets)         # the targets labeled, with their objects
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..utils.files import atomic_write_text
from ..utils.hashing import content_hash

log = logging.getLogger(__name__)

TARGET_FOLDERS = ("id_masks", "masks", "labels", "overlays", "bboxes")
MANIFEST_VERSION = 2
LOCK_NAME = ".labeler.lock"


def output_stems(targets: list[Path]) -> list[str]:
    """Output name of each target: its stem, or stem_ext where two targets share a stem (a.jpg, a.png)."""
    counts = Counter(Path(p).stem for p in targets)
    return [p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in map(Path, targets)]


def fingerprint(**parts) -> str:
    """A short hash of everything a target's labels depend on (JSON-serialisable parts)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0


@dataclass(frozen=True)
class ObjectRecord:
    """One object's result on one target, as recorded: no mask (that is `id_masks/`).

    bbox: (xmin, ymin, xmax, ymax) in integer pixels, max exclusive; None when absent.
    """

    id: int
    logit: float
    present: bool
    area: int = 0
    bbox: tuple[int, int, int, int] | None = None

    @property
    def score(self) -> float:
        """sigmoid(logit), full precision."""
        return sigmoid(self.logit)

    @classmethod
    def from_detection(cls, d) -> ObjectRecord:
        return cls(d.id, float(d.logit), bool(d.present), d.area, d.bbox)


@dataclass
class TargetRecord:
    """What the batch recorded for one target: status "labeled" or "failed", its objects in ID order.

    Usage: `TargetRecord(Path("t/a.jpg"), "a", "labeled", [ObjectRecord(1, 2.3, True, 40, (0, 0, 8, 5))]).present`.
    """

    path: Path
    stem: str
    status: str
    objects: list[ObjectRecord] = field(default_factory=list)
    error: str = ""
    review: dict | None = None  # {"state": accepted|corrected|excluded, "time": ISO 8601, "ids": [...]}
    file_hash: str = ""  # the target file's content hash, where whoever read it computed it ("": not yet)

    @property
    def review_state(self) -> str:
        """"unreviewed", or how a person reviewed the target: "accepted", "corrected", "excluded"."""
        return self.review["state"] if self.review else "unreviewed"

    @classmethod
    def from_detections(cls, path: Path, stem: str, detections, file_hash: str = "") -> TargetRecord:
        """A labeled target's record: one ObjectRecord per Detection, in ID order."""
        objects = [ObjectRecord.from_detection(d) for d in sorted(detections, key=lambda d: d.id)]
        return cls(Path(path), stem, "labeled", objects, file_hash=file_hash)

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def present(self) -> list[tuple[int, float]]:
        """(object ID, score) of each present object, in ID order."""
        return sorted((o.id, o.score) for o in self.objects if o.present)


def _objects_from_v1_rows(rows: list[dict]) -> tuple[list[ObjectRecord], str]:
    objects = [
        ObjectRecord(int(r["id"]), float(r["logit"]), r["status"] == "present", int(r["area"] or 0),
                     tuple(int(v) for v in r["bbox"].split()) if r["bbox"] else None)
        for r in rows if r["id"]
    ]
    return objects, next((r["error"] for r in rows if r["status"] == "failed"), "")


class Manifest:
    """The run's settings and, per target (by file name), fingerprint, file identity and record."""

    def __init__(self, path: Path, entries: dict[str, dict] | None = None, settings: dict | None = None,
                 audits: list[dict] | None = None):
        self.path = Path(path)
        self.entries = entries or {}
        self.settings = settings or {}
        self.audits = audits or []  # the review's random audits: [{"seed", "size", "pool", "time", "sample"}]

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest at `path`; an absent or unreadable one counts as empty (everything is relabeled)."""
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") not in (1, MANIFEST_VERSION) or not isinstance(data.get("targets"), dict):
                raise ValueError(f"unknown manifest version {data.get('version')!r}")
            entries = data["targets"]
            if data["version"] == 1:  # results.csv rows -> records
                for entry in entries.values():
                    entry["objects"], entry["error"] = _objects_from_v1_rows(entry.pop("rows"))
            else:
                for entry in entries.values():
                    entry["objects"] = [ObjectRecord(o["id"], o["logit"], o["present"], o["area"],
                                                     tuple(o["bbox"]) if o["bbox"] else None)
                                        for o in entry["objects"]]
            audits = data.get("audits", [])
            if not isinstance(audits, list):
                raise ValueError(f"audits is a {type(audits).__name__}, not a list")
            return cls(path, entries, data.get("settings"), audits)
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:
            log.warning("%s can't be read (%s); every target will be labeled again", path, e)
            return cls(path)

    def is_done(self, target: Path, stem: str, run_fingerprint: str) -> bool:
        """Labeled before with the same settings, from the same file, to the same output name."""
        entry = self.entries.get(Path(target).name)
        return (
            entry is not None
            and entry["status"] == "labeled"
            and entry["fingerprint"] == run_fingerprint
            and entry["stem"] == stem
            and entry["file"] == content_hash(target)
        )

    @property
    def identified_by_time(self) -> bool:
        """Written before targets were identified by content (by size and time): every target is relabeled once."""
        return any(":" in str(entry.get("file", "")) for entry in self.entries.values())

    def is_reviewed(self, target: Path) -> bool:
        """A person reviewed the target: it is never labeled again (until `review --clear`)."""
        entry = self.entries.get(Path(target).name)
        return bool(entry and entry.get("review"))

    def record(self, run_fingerprint: str, record: TargetRecord) -> None:
        self.entries[record.name] = {
            "fingerprint": run_fingerprint,
            # Only a labeled target is matched by content (a failed one may not even be readable); the
            # hash its reader computed saves reading it again here (over a cluster's file system).
            "file": (record.file_hash or content_hash(record.path)) if record.status == "labeled" else "",
            "stem": record.stem,
            "status": record.status, "error": record.error, "objects": list(record.objects),
        }
        if record.review:
            self.entries[record.name]["review"] = record.review

    def get(self, target: Path) -> TargetRecord | None:
        """The record of `target`, or None when it is not recorded."""
        entry = self.entries.get(Path(target).name)
        if entry is None:
            return None
        return TargetRecord(Path(target), entry["stem"], entry["status"], entry["objects"], entry["error"],
                            entry.get("review"))

    def records(self, targets: list[Path]) -> list[TargetRecord]:
        """Records of the given targets that are recorded (labeled or failed), in their order."""
        return [r for r in map(self.get, targets) if r is not None]

    def labeled(self, targets: list[Path], reviewed_only: bool = False) -> list[TargetRecord]:
        """Records of the targets labeled under their current output stems, in target order.

        Failed targets, targets not labeled yet (an interrupted run) and excluded ones are left out;
        with `reviewed_only`, unreviewed ones too.
        """
        stems = dict(zip(map(Path, targets), output_stems(targets)))
        return [r for r in self.records(targets)
                if r.status == "labeled" and r.stem == stems[r.path] and r.review_state != "excluded"
                and (r.review or not reviewed_only)]

    def status(self, target: Path) -> str | None:
        """"labeled", "failed", or None for a target not recorded."""
        entry = self.entries.get(Path(target).name)
        return entry["status"] if entry else None

    def save(self) -> None:
        targets = {
            name: {**entry, "objects": [
                {"id": o.id, "logit": o.logit, "present": o.present, "area": o.area,
                 "bbox": list(o.bbox) if o.bbox else None} for o in entry["objects"]]}
            for name, entry in sorted(self.entries.items())  # one order, whichever executor recorded first
        }
        data = {"version": MANIFEST_VERSION, "settings": self.settings, "targets": targets}
        if self.audits:
            data["audits"] = self.audits
        atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")


class OutputFolder:
    """Paths of everything under one output folder, its manifest and its lock.

    Usage: `OutputFolder("output").id_mask("img_001", 3)` -> output/id_masks/img_001_id3.png.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.manifest_json = self.root / "manifest.json"
        self.results_csv = self.root / "results.csv"
        self.prompts_json = self.root / "prompts.json"
        self.report_png = self.root / "report.png"
        self.quality_json = self.root / "quality.json"
        self.coco_json = self.root / "coco.json"
        self.yolo = self.root / "yolo"
        self.meshes = self.root / "meshes"

    def id_mask(self, stem: str, obj_id: int) -> Path:
        return self.root / "id_masks" / f"{stem}_id{obj_id}.png"

    def color_mask(self, stem: str) -> Path:
        return self.root / "masks" / f"{stem}.png"

    def label_map(self, stem: str) -> Path:
        return self.root / "labels" / f"{stem}.png"

    def overlay(self, stem: str) -> Path:
        return self.root / "overlays" / f"{stem}.jpg"

    def bboxes(self, stem: str) -> Path:
        return self.root / "bboxes" / f"{stem}.txt"

    def mesh_paths(self, stem: str, obj_id: int) -> tuple[Path, Path]:
        """meshes/<stem>_id<k>.glb and .ply."""
        base = self.meshes / f"{stem}_id{obj_id}"
        return base.with_suffix(".glb"), base.with_suffix(".ply")

    def manifest(self) -> Manifest:
        return Manifest.load(self.manifest_json)

    def labeled(self, targets: list[Path], reviewed_only: bool = False) -> list[TargetRecord]:
        """`Manifest.labeled` of the folder's manifest."""
        return self.manifest().labeled(targets, reviewed_only)

    def read_id_mask(self, stem: str, obj_id: int):
        """(H, W) bool mask of `id_masks/<stem>_id<k>.png`, or None when it is missing or unreadable."""
        import cv2

        path = self.id_mask(stem, obj_id)
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
        return None if mask is None else mask > 127

    def check_writable(self) -> None:
        """Raise UsageError when the folder could not be created or written, without creating anything."""
        folder = self.root.absolute()
        existing = next(p for p in [folder, *folder.parents] if p.exists())
        if not existing.is_dir():
            raise UsageError(f"output folder {self.root} can't be written: {existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"output folder {self.root} can't be written: no write permission in {existing}")

    @contextlib.contextmanager
    def lock(self):
        """Hold the folder's lock (creating the folder): one writing process per output folder.

        A folder locked by a running process stops with one UsageError naming it; the lock of a
        process that died is released by the kernel (an flock), so it is taken over.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"output folder {self.root} can't be written: {e.strerror or e}") from e
        path = self.root / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise UsageError(f"output folder {self.root} is in use by {holder}; wait for it to finish, "
                                 "or choose another --output") from None
            # The holder before us may have removed the file after we opened it: lock the file that is there.
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]})".encode())
            yield self
        finally:
            os.unlink(path)
            os.close(fd)


def all_object_ids(items: list[TargetRecord], object_ids: Iterable[int] | None = None) -> list[int]:
    """The prompts' object IDs (`object_ids`) and every ID in the records, sorted."""
    return sorted(set(object_ids or ()) | {o.id for item in items for o in item.objects})
