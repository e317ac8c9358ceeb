#!/usr/bin/env python3
"""Few-shot SAM 2 labeler: `python main.py` (guide references, then label), `--headless` (rerun from prompts)."""

import sys
from pathlib import Path

from labeler.cli import main

if __name__ == "__main__":
    sys.exit(main(config_path=Path(__file__).with_name("config.py")))
