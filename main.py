#!/usr/bin/env python3
"""Few-shot SAM 2 labeler: `python main.py` (guide references, then label), `--headless` (rerun from prompts)."""

import os
import sys
from pathlib import Path

# Before torch loads OpenMP: its idle threads sleep instead of spinning, leaving the CPU to the threads
# that decode and write (pipeline ceiling 1.4x; no change at 1024 px: docs/performance.md). Yours wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from labeler.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(config_path=Path(__file__).with_name("config.py")))
