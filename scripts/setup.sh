#!/usr/bin/env bash
# Set up napari-mupd in ./.venv: torch first (the CPU build where there is no NVIDIA GPU),
# then the package with its extras (default: all; EXTRAS=test for the test suite).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    echo "setup: python3-venv is missing; installing it with apt" >&2
    rm -rf .venv
    as_root apt-get update -qq
    as_root apt-get install -y -qq python3-venv
    "$python" -m venv .venv
  fi
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" torch
  else
    # The CPU wheel: from the configured index where it lies there, else PyTorch's CPU index.
    "${pip[@]}" "torch==2.13.0+cpu" 2>/dev/null \
      || "${pip[@]}" torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"${pip[@]}" -e ".[${EXTRAS:-all}]"
echo "setup: napari-mupd installed in $(pwd)/.venv"
