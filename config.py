"""User-editable defaults for `python main.py`; command-line options override them.

Paths are relative to the folder you run from. The values shipped here are the library's own
(labeler/defaults.py, the keyword defaults of `labeler.label_batch`; a test checks they agree).
The library itself never reads this file.
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
# auto, bf16 or fp32 (`--precision`). auto: bfloat16 autocast on CUDA and on CPUs with native bf16
# (AMX-BF16 or AVX512-BF16), float32 elsewhere (MPS included).
PRECISION = "auto"

# "refs": each target attends to the references only (independent targets, resumable).
# "chain": targets form a pseudo-video after the references (for frame sequences).
MEMORY = "refs"
# An object is present on a target when its object-score logit exceeds this (`--threshold`).
THRESHOLD = 0.0
# Targets per forward in "refs" mode (`--batch-size`); more than 1 pays off on a GPU.
BATCH_SIZE = 1

# Class names per object ID that new guides start from in the SmartSelector (saved into prompts.json,
# whose names the overlays, results.csv and exports use). `--classes 1=scratch,2=dent` overrides a
# prompts file's names for one run.
CLASS_NAMES = {1: "disc", 2: "square"}

# Dataset exports written after each finished batch (`--formats`): any of "coco", "yolo".
# report.png (the review sheet) is written either way. See docs/outputs.md, "Exports".
FORMATS = []
# Fraction of the YOLO export's images listed in yolo/val.txt, split with a fixed seed (`--yolo-val`).
YOLO_VAL = 0.1
# Exports hold only targets reviewed in `python main.py review` (`--reviewed-only`).
REVIEWED_ONLY = False

# The feature cache (`--cache DIR`, `--no-cache`): image-encoder outputs kept on disk, so a rerun with other
# prompts, threshold or memory mode doesn't encode the same targets again. None: ~/.cache/sam2-labeler/features
# ($XDG_CACHE_HOME), on for CPU and MPS, off for CUDA; a folder: on, there; False: off.
# `python main.py cache` shows its size, `python main.py cache --clear` empties it.
CACHE = None
# Its size cap in GB (`--cache-size`); least recently used entries are evicted first. 1024 px: 16.8 MB a target.
CACHE_SIZE_GB = 20.0

# Optional 3D meshes with SAM 3D Objects, installed separately (see docs/outputs.md, "SAM 3D meshes").
# MESH = True is `--mesh`; MESH_LIMIT = N keeps the N best-scoring objects per ID (`--mesh-limit`);
# SAM3D_CONFIG is its checkpoints/hf/pipeline.yaml (`--sam3d-config`).
MESH = False
MESH_LIMIT = None
SAM3D_CONFIG = None

# Where the batch runs (`--executor`): "local" (this process) or "ray", model replicas on a Ray cluster
# (pip install -e ".[ray]"; refs mode only; see docs/scaling.md). WORKERS is `--workers` (None: one
# per GPU, else 1); RAY_ADDRESS is `--ray-address` (None: a local Ray instance for the run; "auto" or
# "ray://HOST:PORT": join a running cluster).
EXECUTOR = "local"
WORKERS = None
RAY_ADDRESS = None

# The windows in a browser page instead of a desktop window (`--web`; pip install -e ".[web]"; see
# docs/browser.md): served on WEB_HOST:WEB_PORT (`--web-host`, `--web-port`; 0: a free port) behind a
# random token in the printed URL. Anything but loopback lets whoever reaches the port with it in.
WEB = False
WEB_HOST = "127.0.0.1"
WEB_PORT = 8988
