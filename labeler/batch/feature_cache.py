"""The image encoder's output per image, on disk, so a rerun doesn't encode what it has encoded before.

An entry holds what the model backend needs of its image encoder's output for one image
(`ModelBackend.split_features`: for SAM 2, the three feature levels after the mask decoder's
high-resolution projections, at full precision). It is keyed by the image file's content and the
backend's identity (model, checkpoint content, image size, device type, precision, and the versions
of the code that computed it), so any change that could change a feature is a miss. Entries are checked (length and CRC-32) when read: a damaged one is reported,
deleted and computed again. Least recently used entries are evicted past the size cap; a full disk
turns the cache off for the run with one warning.

Usage:
    cache = feature_cache_for(None, 20.0, backend)            # or FeatureCache(folder, max_bytes, model_key(backend))
    levels = cache.load(cache.key(content_hash("a.jpg")))   # None on a miss
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import logging
import os
import struct
import zlib
from pathlib import Path

import torch

from ..utils.files import atomic_write_bytes
from ..utils.hashing import cache_root

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
MAGIC = b"SAM2-LABELER-FEATURES\n"
_HEADER = struct.Struct("<QI")  # payload length, CRC-32 of the payload
SUFFIX = ".feat"


def default_folder() -> Path:
    """`<user cache folder>/sam2-labeler/features` (`$XDG_CACHE_HOME`, else `~/.cache`)."""
    return cache_root() / "features"


def model_key(backend) -> str:
    """What features depend on besides the image: the backend's identity (model, weights' content, size,
    device, precision, code versions) and this file format's version."""
    return json.dumps({"format": FORMAT_VERSION, **backend.identity()}, sort_keys=True)


def feature_cache_for(cache, size_gb: float, backend) -> FeatureCache | None:
    """The feature cache for this backend's model: None when `cache` is False, or None on CUDA (where encoding is
    fast).

    cache: a folder, None for `default_folder()`, or False. size_gb: its size cap.
    """
    if cache is False or (cache is None and backend.device.type == "cuda"):
        return None
    return FeatureCache(default_folder() if cache is None else Path(cache), int(size_gb * 1e9), model_key(backend))


class FeatureCache:
    """Image-encoder features on disk, one file per (model, image).

    folder: where entries go. max_bytes: the size cap (least recently used entries go first).
    model_key: the model's identity (`model_key`).
    """

    def __init__(self, folder: str | os.PathLike, max_bytes: int, model_key: str):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.model_key = model_key
        self.enabled = True
        self.hits = self.misses = 0
        self._size: int | None = None  # bytes on disk, counted on the first store

    def key(self, image_hash: str, batch: int | None = None) -> str:
        """The entry key of an image (its content hash). batch: the forward's batch size, where it can change bits."""
        return hashlib.sha256(f"{self.model_key}\n{image_hash}\n{batch}".encode()).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def load(self, key: str) -> dict | None:
        """The entry ({"levels": (1, C, H, W) CPU tensors, "pos_dtypes": names}), or None on a miss or a damaged entry."""
        if not self.enabled:
            return None
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        try:
            entry = _decode(data)
        except ValueError as e:
            log.warning("feature cache: %s is damaged (%s); computing it again", path, e)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
        self.hits += 1
        return entry

    def store(self, key: str, levels: list[torch.Tensor], pos_dtypes: list[str]) -> None:
        """Write one image's feature levels ((1, C, H, W) tensors) and the dtypes of their position
        encodings; evict the least recently used entries past the cap."""
        if not self.enabled:
            return
        data = _encode({"levels": [t.detach().to("cpu", copy=True) for t in levels], "pos_dtypes": list(pos_dtypes)})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if self._size is None:
                self._size = sum(size for _, size, _ in self._entries())
            path = self._path(key)
            old = path.stat().st_size if path.exists() else 0
            atomic_write_bytes(path, data)
        except OSError as e:
            self.enabled = False
            why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
            log.warning("feature cache at %s turned off for this run: %s; labeling goes on without it",
                        self.folder, why)
            return
        self._size += len(data) - old
        if self._size > self.max_bytes:
            self._evict(keep=path)

    def _entries(self) -> list[tuple[Path, int, int]]:
        """(path, size, mtime_ns) of every entry."""
        found = []
        with os.scandir(self.folder) as it:
            for e in it:
                if e.name.endswith(SUFFIX) and e.is_file():
                    try:
                        st = e.stat()
                    except OSError:
                        continue
                    found.append((Path(e.path), st.st_size, st.st_mtime_ns))
        return found

    def _evict(self, keep: Path) -> None:
        # Down to 90% of the cap, so a full cache doesn't rescan the folder on every store.
        entries = sorted(self._entries(), key=lambda e: e[2])
        self._size = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if self._size <= 0.9 * self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                self._size -= size

    def clear(self) -> None:
        """Delete every entry."""
        for path, _, _ in self._entries() if self.folder.is_dir() else []:
            path.unlink(missing_ok=True)
        self._size = None

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) on disk."""
        if not self.folder.is_dir():
            return 0, 0
        entries = self._entries()
        return len(entries), sum(size for _, size, _ in entries)


def _encode(entry: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(entry, buf)
    payload = buf.getvalue()
    return MAGIC + _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode(data: bytes) -> dict:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _HEADER.size:
        raise ValueError("not a feature cache entry")
    length, crc = _HEADER.unpack_from(data, len(MAGIC))
    payload = memoryview(data)[len(MAGIC) + _HEADER.size:]
    if len(payload) != length:
        raise ValueError(f"{len(payload)} of {length} bytes")
    if zlib.crc32(payload) != crc:
        raise ValueError("checksum mismatch")
    try:
        entry = torch.load(io.BytesIO(payload), weights_only=True)
        levels, dtypes = entry["levels"], entry["pos_dtypes"]
    except Exception as e:  # a payload that passed the checksum but isn't ours
        raise ValueError(f"unreadable ({e})") from None
    if not all(isinstance(t, torch.Tensor) for t in levels) or len(dtypes) != len(levels):
        raise ValueError("unexpected contents")
    return entry


def cache_command(argv: list[str], folder: str | None = None) -> int:
    """`python main.py cache [--clear] [--cache DIR]`: the feature cache's size and entries, or empty it."""
    p = argparse.ArgumentParser(prog="main.py cache", description="The feature cache: image-encoder outputs "
                                "kept so reruns don't encode the same targets again.")
    p.add_argument("--cache", metavar="DIR", default=folder, help=f"its folder (default: {default_folder()})")
    p.add_argument("--clear", action="store_true", help="delete every entry")
    args = p.parse_args(argv)
    path = Path(args.cache) if args.cache else default_folder()
    cache = FeatureCache(path, 0, "")
    entries, size = cache.usage()
    if args.clear:
        cache.clear()
        log.info("feature cache %s: deleted %d entries (%.1f MB)", path, entries, size / 1e6)
    else:
        log.info("feature cache %s: %d entries, %.1f MB", path, entries, size / 1e6)
    return 0
