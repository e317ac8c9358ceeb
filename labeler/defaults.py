"""The library's defaults, the one source for the API's keyword defaults and the command line's.

`config.py` holds the same values for users to edit (a test checks they agree).
"""

MODEL = "tiny"  # SAM 2.1 tiny, small, base_plus or large
CHECKPOINT = None  # None: checkpoints/sam2.1_hiera_<model>.pt; "none": untrained weights (tests only)
IMAGE_SIZE = None  # None: the model's own (1024)
DEVICE = "auto"  # cuda, then mps, then cpu
PRECISION = "auto"  # bf16 autocast on CUDA and on CPUs with native bf16 (AMX-BF16, AVX512-BF16), else fp32
MEMORY = "refs"  # "refs": targets attend to the references only; "chain": a pseudo-video of targets
THRESHOLD = 0.0  # an object is present when its object-score logit exceeds this
BATCH_SIZE = 1  # targets per forward in refs mode
FORMATS = ()  # dataset exports after the batch: "coco", "yolo"
REVIEWED_ONLY = False  # exports hold only the targets a person reviewed (accepted or corrected)
YOLO_VAL = 0.1  # fraction of the YOLO export's images listed for validation (fixed seed)
CACHE = None  # feature cache folder; None: the user's cache folder, on for CPU and MPS, off for CUDA; False: off
CACHE_SIZE_GB = 20.0  # the feature cache's size cap; least recently used entries are evicted first
MESH = False
MESH_LIMIT = None
SAM3D_CONFIG = None
EXECUTOR = "local"  # "local": this process; "ray": model replicas on a Ray cluster (the ray extra)
WORKERS = None  # Ray model replicas; None: one per GPU, else 1
RAY_ADDRESS = None  # None: start a local Ray instance; "auto" or "ray://HOST:PORT": join a running cluster
