"""What the benchmarks share: the repository root on sys.path, and benchmarks/results.json.

Importing this module puts the repository root first on sys.path, so `import labeler` imports this
checkout's package (`use_checkout` puts another one before it). Each benchmark keeps its numbers in
results.json under a key of its own and merges them with `merge_results`: the other benchmarks' keys
are kept. `BENCHMARK_RESULTS=PATH` writes them to another file (a smoke run that must not replace the
recorded numbers).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"  # the real photos, beside the checkout (absent: generated images)


def use_checkout(repo: str | os.PathLike = ROOT) -> Path:
    """Put `repo` first on sys.path, so `import labeler` imports its package; returns it, resolved."""
    path = Path(repo).resolve()
    while str(path) in sys.path:
        sys.path.remove(str(path))
    sys.path.insert(0, str(path))
    return path


use_checkout(ROOT)


def results_path() -> Path:
    """benchmarks/results.json, or the file `BENCHMARK_RESULTS` names."""
    return Path(os.environ.get("BENCHMARK_RESULTS") or ROOT / "benchmarks" / "results.json")


def load_results(key: str, default=None):
    """What results.json holds under `key` (`default` when the file or the key is absent)."""
    path = results_path()
    data = json.loads(path.read_text()) if path.is_file() else {}
    return data.get(key, default)


def merge_results(key: str, value) -> Path:
    """Store `value` under `key` in results.json, keeping every other key; written atomically. Returns the file."""
    path = results_path()
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = value
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path
