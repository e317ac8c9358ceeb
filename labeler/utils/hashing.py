"""Content hashes of files (checkpoints, images), remembered by path, size and modification time.

A rerun of a large batch hashes nothing it has hashed before: the hashes are kept in
`<cache folder>/hashes.sqlite` (sqlite, so several processes on one machine can share it). A file
whose size or modification time changed is hashed again. Where that file can't be written, hashes
are remembered for the process only.

Usage: `digest = content_hash("targets/img_001.jpg")`   # 64 hex digits, SHA-256 of the bytes
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)
APP_FOLDER = "sam2-labeler"


def cache_root() -> Path:
    """The user's cache folder for the labeler: `$XDG_CACHE_HOME/sam2-labeler`, else `~/.cache/sam2-labeler`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / APP_FOLDER


class ContentHasher:
    """SHA-256 of files, memoised in memory and (when `db_path` is given and writable) on disk.

    Usage: `hasher = ContentHasher(Path("/tmp/hashes.sqlite")); hasher("a.jpg")`.
    """

    def __init__(self, db_path: Path | None):
        self.db_path = db_path
        self._memory: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()  # reading threads hash at the same time
        self._db: sqlite3.Connection | None = None
        self._db_tried = db_path is None

    def _database(self) -> sqlite3.Connection | None:
        if not self._db_tried:
            self._db_tried = True
            try:
                self.db_path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.db_path, timeout=30, check_same_thread=False)
                # A cache of facts that can be recomputed: no fsync per entry.
                db.execute("PRAGMA synchronous=OFF")
                db.execute("CREATE TABLE IF NOT EXISTS hashes "
                           "(path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT)")
                db.commit()
                self._db = db
            except (OSError, sqlite3.Error) as e:
                log.warning("file hashes are not remembered between runs: %s can't be used (%s)", self.db_path, e)
        return self._db

    def __call__(self, path: str | os.PathLike) -> str:
        path = os.path.abspath(path)
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
        with self._lock:  # the memory and the database; the hashing itself runs on the caller's thread
            digest = self._memory.get(key) or self._remembered(key)
            if digest is not None:
                self._memory[key] = digest
                return digest
        digest = _sha256(path)
        with self._lock:
            self._memory[key] = digest
            self._remember(key, digest)
        return digest

    def _remembered(self, key: tuple[str, int, int]) -> str | None:
        db = self._database()
        if db is None:
            return None
        try:
            row = db.execute("SELECT size, mtime_ns, sha256 FROM hashes WHERE path = ?", (key[0],)).fetchone()
        except sqlite3.Error:
            return None
        return row[2] if row is not None and tuple(row[:2]) == key[1:] else None

    def _remember(self, key: tuple[str, int, int], digest: str) -> None:
        db = self._database()
        if db is not None:
            try:
                db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", (*key, digest))
                db.commit()
            except sqlite3.Error as e:  # a full or read-only disk: remembered in memory only
                log.debug("could not remember the hash of %s: %s", key[0], e)


def _sha256(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


_hashers: dict[Path, ContentHasher] = {}
_hashers_lock = threading.Lock()


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the file's bytes, remembered in the user's cache folder by path, size and mtime."""
    db_path = cache_root() / "hashes.sqlite"
    with _hashers_lock:
        hasher = _hashers.get(db_path)
        if hasher is None:
            hasher = _hashers[db_path] = ContentHasher(db_path)
    return hasher(path)
