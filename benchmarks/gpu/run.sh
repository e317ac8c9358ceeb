#!/usr/bin/env bash
# One short GPU lease, one call (at most 8 minutes), on a bare machine (Python 3.12, torch, matplotlib,
# OpenCV, Pillow, tqdm, PyYAML; no network), from the repository root:
#   1. installs benchmarks/gpu/wheels/ (prepare.sh builds it) with pip --no-index --no-deps into a folder
#      on PYTHONPATH, unless what they hold is importable already;
#   2. runs the CUDA and bf16 tests (they skip without CUDA) -> $OUT/pytest.txt, $OUT/pytest.xml;
#   3. runs benchmarks/gpu/bench_gpu.py: refs mode, 1024 px, 2 refs x 2 objects, --batch-size 1, 4, 16, the
#      feature cache off, cold and warm, over the real photos repeated to --targets -> $OUT/bench_gpu.json;
#   and writes $OUT/run.json: each step's exit status and seconds, the GPU, the test counts.
# $OUT is the device machine's output folder (default here: benchmarks/gpu/out).
#
# On the device:  bash benchmarks/gpu/run.sh      (carry benchmarks/gpu/wheels and benchmarks/gpu/data)
# Checked here:   bash benchmarks/gpu/run.sh --device cpu --image-size 64 --targets 4 --batch-sizes 1,2 \
#                      --tests tests/models/sam2/cuda_checks.py
# Options: --device cuda|cpu  --image-size N  --targets N  --batch-sizes LIST  --tests "PATHS"  --budget SECONDS
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEVICE=cuda IMAGE_SIZE=1024 TARGETS=256 BATCH_SIZES=1,4,16 BUDGET=470
TESTS="tests/models/sam2/cuda_checks.py tests/models/test_precision.py tests/models/sam2/test_fidelity_bf16.py"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2 ;;
    --image-size) IMAGE_SIZE=$2 ;;
    --targets) TARGETS=$2 ;;
    --batch-sizes) BATCH_SIZES=$2 ;;
    --tests) TESTS=$2 ;;
    --budget) BUDGET=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
OUT=${OUT:-$ROOT/benchmarks/gpu/out}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export XDG_CACHE_HOME=$WORK/cache  # the labeler's file hashes and default feature cache: not the user's
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
SECONDS=0

# 1. Wheels
NEEDED="import sam2, hydra, omegaconf, antlr4, iopath, portalocker, pycocotools, trimesh, plyfile, pytest"
start=$SECONDS
if python -c "$NEEDED" 2>/dev/null; then
  INSTALL=already-importable INSTALL_RC=0
elif python -m pip --version > /dev/null 2>&1; then
  python -m pip install -q --no-index --no-deps --target "$WORK/site" "$ROOT"/benchmarks/gpu/wheels/*.whl \
    > "$OUT/install.txt" 2>&1
  INSTALL_RC=$? INSTALL=installed
  export PYTHONPATH=$PYTHONPATH:$WORK/site
  python -c "$NEEDED" >> "$OUT/install.txt" 2>&1 || INSTALL_RC=1
else  # no pip: these wheels need no build step, so unpacking them is installing them
  python -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
    "$WORK/site" "$ROOT"/benchmarks/gpu/wheels/*.whl > "$OUT/install.txt" 2>&1
  INSTALL_RC=$? INSTALL=unpacked
  export PYTHONPATH=$PYTHONPATH:$WORK/site
  python -c "$NEEDED" >> "$OUT/install.txt" 2>&1 || INSTALL_RC=1
fi
INSTALL_S=$((SECONDS - start))
echo "wheels: $INSTALL (status $INSTALL_RC, ${INSTALL_S} s)"

# 2. Tests
start=$SECONDS
# shellcheck disable=SC2086  # TESTS is a list of paths
timeout 200 python -m pytest -q -p no:cacheprovider -rs -k "cuda or bf16 or precision" --junitxml "$OUT/pytest.xml" \
  $TESTS > "$OUT/pytest.txt" 2>&1
TESTS_RC=$?
TESTS_S=$((SECONDS - start))
echo "tests: status $TESTS_RC, ${TESTS_S} s: $(tail -n 1 "$OUT/pytest.txt")"

# 3. Benchmark, in what is left of the budget
start=$SECONDS
LEFT=$((BUDGET - SECONDS))
[ "$LEFT" -lt 30 ] && LEFT=30
timeout "$LEFT" python benchmarks/gpu/bench_gpu.py --device "$DEVICE" --image-size "$IMAGE_SIZE" \
  --targets "$TARGETS" --batch-sizes "$BATCH_SIZES" --out "$OUT/bench_gpu.json" > "$OUT/bench.txt" 2>&1
BENCH_RC=$?
BENCH_S=$((SECONDS - start))
grep -v '^!!' "$OUT/bench.txt" | tail -n 12

GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
python - "$OUT" <<EOF
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out = Path(sys.argv[1])
tests = None
if (out / "pytest.xml").is_file():
    suite = ET.parse(out / "pytest.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    tests = {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]}
run = {
    "device": "$DEVICE", "gpu": "$GPU" or None, "python": sys.version.split()[0],
    "install": {"mode": "$INSTALL", "status": $INSTALL_RC, "seconds": $INSTALL_S},
    "tests": {"status": $TESTS_RC, "seconds": $TESTS_S, "counts": tests, "paths": "$TESTS".split()},
    "bench": {"status": $BENCH_RC, "seconds": $BENCH_S, "json": "bench_gpu.json"},
    "total_seconds": $SECONDS,
}
(out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
print(f"wrote {out / 'run.json'}")
EOF
[ "$INSTALL_RC" -eq 0 ] && [ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
