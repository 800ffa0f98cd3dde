#!/usr/bin/env bash
# On a GPU machine: parity probabilities of every shipped model on one validation tile, and
# the tiling benchmark and benchmarks/throughput.py on an 8192^2 image.
# usage: bash scripts/gpu_check.sh DATA
# .whl/ holds the wheels carried there (the machine reaches no index): pip download --no-deps
#   --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
#   --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex optree
#   (numba, scipy, scikit-image are in its image: device KINDS.md)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src KERAS_BACKEND=jax NUCLEOSEG_USER_MODELS=/tmp/usermodels \
  PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
for m in unet unet_lite segnet deeplabv3 se_unet; do
  python3 scripts/gpu_parity.py "$m" "$1" "$OUT/parity_$m.npz" 2>&1 | tail -1
done
python3 benchmarks/tiling.py --data "$1" --size 8192 --tile 2048 --batch 4 \
  unet unet_lite segnet deeplabv3 se_unet 2>&1 | grep -v -E "^(W|I|E)[0-9]{4} " | tee "$OUT/tiling_gpu.txt"
# the table on the GPU: FLOPs/px, the GPU's float32 GEMM rate, bare/tiled/+post/command
# MP/s and peak GPU memory, in float32 and bfloat16
python3 benchmarks/throughput.py --data "$1" --size 8192 --precision float32 bfloat16 \
  --rounds 2 2>&1 | grep -v -E "^(W|I|E)[0-9]{4} |nuclei ->" | tee "$OUT/throughput_gpu.txt"
