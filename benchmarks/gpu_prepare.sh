#!/usr/bin/env bash
# Prepare benchmarks/gpu_check.sh for the lent GPU machine, once, here (where pip reaches
# PyPI and the sample slide can be decoded). That machine's image has Python 3.12, torch,
# accelerate, tifffile, scikit-image and pandas, but not dask, distributed, zarr, diffusers
# or imagecodecs, and it cannot download anything. This writes into benchmarks/.cache/gpu/
# (git-ignored; name it in the run's `carry`):
#   site.zip                  the missing packages for CPython 3.12 on x86-64 Linux, at this
#                             venv's versions, installed and zipped (diffusers without its
#                             pipelines, which napari-mupd never imports: the AutoencoderKL
#                             is all it uses)
#   CMU-1-Small-Region.jpg    the sample slide as a JPEG that Pillow reads (its tiles need
#   CMU-1-Small-Region.json   imagecodecs), with its pixel size
# Everything that travels (the working tree plus this folder) must stay under 64 MiB; the
# script prints the total.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=benchmarks/.cache/gpu
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out"

packages=(diffusers dask distributed zarr numcodecs donfig google-crc32c partd locket tblib
  tornado zict)
pins=()
for name in "${packages[@]}"; do
  pins+=("$name==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
echo "gpu_prepare: ${pins[*]}" >&2
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$stage/wheels" "${pins[@]}"
"$PY" - "$stage" "$out/site.zip" <<'PY'
import shutil, sys, zipfile
from pathlib import Path

stage, target = Path(sys.argv[1]), Path(sys.argv[2])
site = stage / "site"
for wheel in sorted((stage / "wheels").glob("*.whl")):
    zipfile.ZipFile(wheel).extractall(site)  # a wheel is its installed tree, plus .dist-info
for drop in ["diffusers/pipelines", "diffusers/modular_pipelines", "numcodecs/tests",
             "zarr/testing", "distributed/tests", "dask/tests"]:
    shutil.rmtree(site / drop, ignore_errors=True)
for cache in site.rglob("__pycache__"):
    shutil.rmtree(cache, ignore_errors=True)
with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
    for path in sorted(site.rglob("*")):
        if path.is_file():
            zf.write(path, path.relative_to(site))
print(f"gpu_prepare: {target} {target.stat().st_size / 2**20:.1f} MiB", file=sys.stderr)
PY
"$PY" - "$out" <<'PY'
import json, sys
from pathlib import Path

from PIL import Image

from napari_mupd import open_slide
from napari_mupd.resources import sample_slide_path

out = Path(sys.argv[1])
with open_slide(sample_slide_path()) as slide:
    w, h = slide.dimensions
    pixels = slide.read_region((0, 0), 0, (w, h))
    mpp = slide.mpp[0]
jpg = out / "CMU-1-Small-Region.jpg"
Image.fromarray(pixels).save(jpg, quality=90)
jpg.with_suffix(".json").write_text(json.dumps({"mpp": mpp, "source": sample_slide_path().name}))
print(f"gpu_prepare: {jpg} {jpg.stat().st_size / 2**20:.1f} MiB, {mpp} um/px", file=sys.stderr)
PY
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null \
  | awk '{s += $1} END {print s}')
prepared=$(du -sb "$out" | cut -f1)
awk -v t="$tree" -v p="$prepared" 'BEGIN {
  printf "gpu_prepare: working tree %.1f MiB + %s %.1f MiB = %.1f MiB to send (limit 64)\n",
    t / 2^20, "benchmarks/.cache/gpu", p / 2^20, (t + p) / 2^20 }' >&2
