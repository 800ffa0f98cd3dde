#!/usr/bin/env bash
# Install NucleoSeg and everything it needs into ./.venv (Debian/Ubuntu; uses sudo when not
# root). Usage: bash scripts/install.sh [EXTRAS]   e.g. "napari" or "testing"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-napari}"
if command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # Qt's xcb platform, OpenGL (Mesa) and a virtual X server for tests and screenshots
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends \
    xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
    libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-randr0 libxcb-shape0 \
    libxcb-cursor0 libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libfontconfig1 \
    libdbus-1-3 python3-venv >/dev/null
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${extras}]"
if [[ ",${extras}," == *",testing,"* ]] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # PyTorch for the backend-parity tests, CPU build: PyTorch's CPU index where it answers
  # (~200 MB), else 2.13.0 (a CPU build where a local wheel house has it, as on our CI
  # machine; PyPI's Linux build of it pulls CUDA libraries)
  .venv/bin/python -m pip install -q --timeout 15 --retries 0 torch \
      --index-url https://download.pytorch.org/whl/cpu 2>/dev/null ||
    .venv/bin/python -m pip install -q "torch==2.13.0"
fi
echo "installed napari-nucleoseg[${extras}] into .venv"
