#!/usr/bin/env bash
# On a GPU machine (Keras on JAX): issue 16's GPU checks of the shipped models, packed into
# $OUT for scripts/device_kit.py unpack, then compared here by scripts/gpu_compare.py.
#   info.txt             what `nucleoseg info` says --backend auto picks, and the devices
#   labels_M_TILE.tif    `nucleoseg segment TILE --backend auto --device auto -m M`: the CLI's
#                        labels of each validation tile (compare: labels Dice >= 0.999)
#   cli_times.txt      each of those commands' wall time
#   parity_M.npz         GPU probabilities of each model on the MoNuSeg validation tile
#   tiling_gpu.txt, throughput_gpu.txt   MP/s of every model on an 8192^2 image
# Prepare here: python scripts/device_kit.py stage --check; ... hide --keep-models; ... size
#   --carry .device/val .device/whl; run(command="bash scripts/gpu_check.sh",
#   carry=[".device/val", ".device/whl"], timeout_s=500); device_kit.py restore.
#   NUCLEOSEG_CHECK_BUDGET (default 420 s) bounds all the steps together.
# usage: bash scripts/gpu_check.sh [DATA]   (default .device/val)
set -u
data=${1:-.device/val}
. scripts/gpu_env.sh
quiet="$quiet|nuclei ->"
work=$(mktemp -d)
# every step ends before the deadline, so the packing always runs (what ran comes back)
deadline=$((SECONDS + ${NUCLEOSEG_CHECK_BUDGET:-420}))
python3() { timeout -k 5 $((deadline > SECONDS ? deadline - SECONDS : 1)) python3 "$@"; }
cli() { python3 -c "import sys; from nucleoseg.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
cli info 2>&1 | grep -v -E "$quiet" | tee "$work/info.txt"
models=${NUCLEOSEG_CHECK_MODELS:-unet unet_lite segnet deeplabv3 se_unet}
# parity in float32 without TF32 (JAX's GPU default for float32 matmuls and convolutions):
# a check of the backend and device, not of a precision
for m in $models; do
  for tile in "$data"/*/train/images/*; do
    name=$(basename "${tile%.*}")
    t0=${EPOCHREALTIME/./}
    JAX_DEFAULT_MATMUL_PRECISION=float32 cli segment "$tile" -o "$work/labels_${m}_${name}.tif" \
      -m "$m" --backend auto --device auto --precision float32 -q 2>&1 | grep -v -E "$quiet"
    # the process's wall time: the first of a model fills JAX's compilation cache, the next
    # reads it (backend.jax_cache_settings)
    echo "$m $name $(( (${EPOCHREALTIME/./} - t0) / 1000 )) ms" >> "$work/cli_times.txt"
  done
  JAX_DEFAULT_MATMUL_PRECISION=float32 python3 scripts/gpu_parity.py "$m" "$data" \
    "$work/parity_$m.npz" 2>&1 | tail -1
done
size=${NUCLEOSEG_CHECK_SIZE:-8192}
python3 benchmarks/tiling.py --data "$data" --size "$size" --tile 2048 --batch 4 $models 2>&1 \
  | grep -v -E "$quiet" | tee "$work/tiling_gpu.txt"
# the table on the GPU: FLOPs/px, the GPU's float32 GEMM rate, bare/tiled/+post/command
# MP/s and peak GPU memory, in float32 and bfloat16
python3 benchmarks/throughput.py --data "$data" --size "$size" --precision float32 bfloat16 \
  --rounds 2 $models 2>&1 | grep -v -E "$quiet" | tee "$work/throughput_gpu.txt"
if [ "$SECONDS" -ge "$deadline" ]; then
  echo "the deadline (${NUCLEOSEG_CHECK_BUDGET:-420} s) cut the checks short" | tee "$work/cut.txt"
fi
command python3 scripts/device_kit.py pack "$work" "$OUT"
