#!/usr/bin/env bash
# GPU checks in one run and one table (benchmarks/gpu_check.py; docs/benchmarks.md says how
# to run it on a lent GPU machine). Under 8 minutes on one H200. Without a GPU, or with
# MUPD_GPU_CHECK_TINY=1, it runs the same rows on the CPU at tiny sizes in seconds.
#
# The GPU image has torch, accelerate and tifffile but not dask, distributed, zarr,
# diffusers or imagecodecs: benchmarks/gpu_prepare.sh (run once where pip reaches PyPI)
# leaves them, and a JPEG copy of the sample slide, in benchmarks/.cache/gpu/, which this
# script puts on the path when the packages are missing. The report also goes to
# $OUT/gpu_check.md when OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if ! "$PYTHON" -c "import dask, distributed, zarr, diffusers" 2>/dev/null; then
  site=benchmarks/.cache/gpu/site.zip
  if [ ! -f "$site" ]; then
    echo "gpu_check: dask, distributed, zarr or diffusers missing and no $site;" \
      "run benchmarks/gpu_prepare.sh where pip reaches PyPI, and carry benchmarks/.cache/gpu" >&2
    exit 2
  fi
  target=${TMPDIR:-/tmp}/mupd-gpu-site
  "$PYTHON" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$site" "$target"
  export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PYTHON" -c "import napari_mupd" 2>/dev/null; then
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
args=()
if [ -n "${OUT:-}" ]; then args+=(--markdown "$OUT/gpu_check.md"); fi
exec "$PYTHON" benchmarks/gpu_check.py "${args[@]}" "$@"
