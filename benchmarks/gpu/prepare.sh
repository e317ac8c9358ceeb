#!/usr/bin/env bash
# Prepares benchmarks/gpu/run.sh's inputs on a machine with network, before a GPU lease:
#   benchmarks/gpu/wheels/       the wheels `labeler` needs beyond the GPU image's own packages (Python 3.12,
#                                torch, matplotlib, OpenCV, Pillow, tqdm, PyYAML), plus pytest: the versions
#                                installed here (the tested ones), for Python 3.12, no dependencies resolved
#   benchmarks/gpu/data/real/    a copy of ../shared/data/real (the real photos; ../shared does not travel)
# Both are git-ignored; pass them to the device run as carried paths:
#   run(command="bash benchmarks/gpu/run.sh", carry=["benchmarks/gpu/wheels", "benchmarks/gpu/data"])
# Usage: bash benchmarks/gpu/prepare.sh   (from the repository root; about a minute)
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=benchmarks/gpu/wheels
mkdir -p "$WHEELS"
# rf-sam-2 and what it imports (hydra-core, omegaconf, antlr4, iopath, portalocker), what the labeler adds
# (pycocotools; trimesh and plyfile for --mesh), and pytest with its own dependencies.
PACKAGES="rf-sam-2 hydra-core omegaconf antlr4-python3-runtime iopath portalocker pycocotools trimesh plyfile
pytest pluggy iniconfig pygments"
for name in $PACKAGES; do
  version=$(python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
  spec="$name${version:+==$version}"
  if pip download -q --python-version 3.12 --only-binary=:all: --no-deps -d "$WHEELS" "$spec" 2>/dev/null; then
    echo "downloaded $spec"
  else
    # No wheel on the index (iopath, antlr4-python3-runtime publish source only): build it here. Only pure-
    # Python wheels (py3-none-any) install on another Python, so anything else stops the script.
    before=$(ls "$WHEELS")
    pip wheel -q --no-deps -w "$WHEELS" "$spec"
    built=$(comm -13 <(echo "$before") <(ls "$WHEELS"))
    case "$built" in
      *-py3-none-any.whl|*-py2.py3-none-any.whl) echo "built $built (pure Python)" ;;
      *) echo "error: $spec built as $built, not a pure-Python wheel" >&2; exit 1 ;;
    esac
  fi
done
SHARED=../shared/data/real
if [ -d "$SHARED" ]; then
  rm -rf benchmarks/gpu/data/real
  mkdir -p benchmarks/gpu/data
  cp -r "$SHARED" benchmarks/gpu/data/real
  echo "copied $SHARED to benchmarks/gpu/data/real"
else
  echo "no $SHARED: the GPU benchmark will label generated images"
fi
du -sh "$WHEELS" benchmarks/gpu/data 2>/dev/null || true
