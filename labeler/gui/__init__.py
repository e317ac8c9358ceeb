"""The windows: the SmartSelector over the references (`selector.py`) and the review window (`review_window.py`),
both built on `canvas.GuideCanvas` (its parts: `view.py`, `repaint.py`, `preview_cache.py`, keys in `keys.py`),
shown by a window host (`hosts/`: the desktop, a browser page, a notebook cell). Importing this package
imports no GUI toolkit.

The command line's entry: `guide = guide_references(refs, classes, prompts_path)`, then `label_batch(...,
guide=guide)` builds the model and calls `guide(backend)`, which opens the windows and returns the prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def guide_references(references: list[Path], classes: dict[int, str], prompts_path: Path, existing=None,
                     host=None) -> Callable:
    """`guide(backend) -> PromptSet`: the SmartSelector over `references`, saving to `prompts_path` (see
    `selector.run_selector`). The host (default: the desktop) is opened now, so a missing display is
    reported (UsageError) before any model is built."""
    from .hosts import DesktopHost
    from .selector import run_selector

    host = host or DesktopHost()
    host.open()

    def guide(backend):
        return run_selector(references, backend, classes, prompts_path, existing=existing, host=host)

    return guide
