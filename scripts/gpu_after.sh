#!/usr/bin/env bash
# After gpu_train.sh: GPU throughput table and parity probabilities for the new models, then
# cut .keras files to the 15 MB pieces the device tool can bring back.
set -u
export PYTHONPATH=/tmp/site:$PWD/src KERAS_BACKEND=jax NUCLEOSEG_USER_MODELS=/tmp/usermodels \
  PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
for m in "$@"; do
  python3 scripts/gpu_parity.py "$OUT/$m.keras" .gpu_data "$OUT/parity_$m.npz" 2>&1 | tail -1
done
models=$(for m in "$@"; do printf '%s ' "$OUT/$m.keras"; done)
python3 benchmarks/tiling.py --data .gpu_data --size 8192 --tile 2048 --batch 4 $models \
  2>&1 | grep -v -E "^(W|I|E)[0-9]{4} " | tee "$OUT/tiling_gpu.txt"
nvidia-smi --query-gpu=memory.used --format=csv >> "$OUT/tiling_gpu.txt"
cd "$OUT" && for f in *.keras; do split -b 15m "$f" "$f.part-" && rm "$f"; done; ls -la
