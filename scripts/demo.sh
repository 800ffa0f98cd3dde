#!/usr/bin/env bash
# Install, then open napari with NucleoSeg docked on a sample image (needs a display).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh napari
export NUCLEOSEG_DATA="${NUCLEOSEG_DATA:-$PWD/../shared/data}"
exec .venv/bin/python -m nucleoseg.demo "$@"
