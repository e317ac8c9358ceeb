"""What the output folder already holds: per target, the fingerprint it was labeled with and its rows.

A rerun skips targets labeled with the same fingerprint, so an interrupted batch resumes where it
stopped. The manifest is written atomically, like every output.

Usage:
    manifest = Manifest.load(out / "manifest.json")
    if not manifest.is_done(path, stem, fingerprint): ...label...; manifest.record(path, stem, fingerprint, rows)
    manifest.save()
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .files import atomic_write_text

log = logging.getLogger(__name__)
VERSION = 1


def file_identity(path: Path) -> str:
    """Size and modification time: a changed file gets a new identity without being read."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def fingerprint(**parts) -> str:
    """A short hash of everything a target's labels depend on (JSON-serialisable parts)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Manifest:
    """Per target (by file name): fingerprint, file identity, output stem, status and results.csv rows."""

    def __init__(self, path: Path, entries: dict[str, dict] | None = None):
        self.path = Path(path)
        self.entries = entries or {}

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        """The manifest at `path`; an absent or unreadable one counts as empty (everything is relabeled)."""
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != VERSION or not isinstance(data.get("targets"), dict):
                raise ValueError(f"unknown manifest version {data.get('version')!r}")
            return cls(path, data["targets"])
        except (OSError, ValueError, AttributeError) as e:
            log.warning("%s can't be read (%s); every target will be labeled again", path, e)
            return cls(path)

    def is_done(self, target: Path, stem: str, run_fingerprint: str) -> bool:
        """Labeled before with the same settings, from the same file, to the same output name."""
        entry = self.entries.get(target.name)
        return (
            entry is not None
            and entry["status"] == "labeled"
            and entry["fingerprint"] == run_fingerprint
            and entry["stem"] == stem
            and entry["file"] == file_identity(target)
        )

    def record(self, target: Path, stem: str, run_fingerprint: str, status: str, rows: list[dict]) -> None:
        self.entries[target.name] = {
            "fingerprint": run_fingerprint, "file": file_identity(target), "stem": stem,
            "status": status, "rows": rows,
        }

    def labeled(self, targets: list[Path]) -> list[tuple[Path, dict]]:
        """(target, entry) of the targets recorded as labeled, in their order."""
        return [(t, self.entries[t.name]) for t in targets if self.status(t) == "labeled"]

    def status(self, target: Path) -> str | None:
        """"labeled", "failed", or None for a target not recorded."""
        entry = self.entries.get(Path(target).name)
        return entry["status"] if entry else None

    def rows(self, targets: list[Path]) -> list[dict]:
        """results.csv rows of the given targets, in their order."""
        return [row for t in targets if t.name in self.entries for row in self.entries[t.name]["rows"]]

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"version": VERSION, "targets": self.entries}, indent=1) + "\n")
