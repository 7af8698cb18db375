#!/usr/bin/env bash
# Set up (venv, test extras, Xvfb for the napari tests), check lint, types and the import
# layers, then run the whole test suite. Any finding fails the run.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

EXTRAS=test bash scripts/setup.sh

# napari's canvas needs a real X server (QT_QPA_PLATFORM=offscreen is not enough).
qt_libs=(xvfb xauth libgl1 libegl1 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0
  libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0
  libxcb-cursor0 libxcb-shape0 libxcb-randr0 libxcb-xfixes0)
missing=()
for pkg in "${qt_libs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "test: ruff, mypy, import layers" >&2
.venv/bin/ruff check src tests benchmarks scripts examples
.venv/bin/ruff format --check --quiet src tests benchmarks scripts examples
.venv/bin/mypy src
.venv/bin/lint-imports --no-cache

# Tests use only data kept in the repository: more than a handful of skips fails the run.
export MUPD_MAX_SKIPS=${MUPD_MAX_SKIPS:-3}
exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "$@"
