"""User-editable defaults for `python main.py`; command-line options override them.

Paths are relative to the folder you run from.
"""

# Reference images to guide in the SmartSelector (`--refs`).
REFERENCE_DIR = "assets/demo/refs"
# Target images to label (`--targets`): every image directly in this folder.
TARGET_DIR = "assets/demo/targets"
# Where results go (`--output`); the saved prompts default to OUTPUT_DIR/prompts.json (`--prompts`).
OUTPUT_DIR = "output"

# SAM 2.1 model: tiny, small, base_plus or large (`--model`).
MODEL = "tiny"
# Checkpoint file (`--checkpoint`); None means checkpoints/sam2.1_hiera_<MODEL>.pt,
# "none" builds untrained weights (tests and benchmarks only).
CHECKPOINT = None
# Model input size (`--image-size`); None keeps the model's own (1024).
IMAGE_SIZE = None
# auto, cpu, cuda or mps (`--device`).
DEVICE = "auto"

# "refs": each target attends to the references only (independent targets, resumable).
# "chain": targets form a pseudo-video after the references (for frame sequences).
MEMORY = "refs"
# An object is present on a target when its object-score logit exceeds this (`--threshold`).
THRESHOLD = 0.0

# Class name per object ID, used in the selector, overlays, results.csv and exports.
CLASS_NAMES = {1: "disc", 2: "square"}
