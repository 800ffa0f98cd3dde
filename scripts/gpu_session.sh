#!/usr/bin/env bash
# On the GPU machine (Keras on JAX): the from-scratch runs issues 14 and 15 wait for, three
# at once on one GPU, each with the same training-time budget, then their weights and logs
# packed into $OUT for scripts/device_kit.py unpack. Prepared with device_kit.py (stage,
# hide, size; see scripts/README.md), tested on the CPU with JAX and a small budget.
#   hv_scratch       UNet + HoVer-Net HV head (benchmarks/hv_head.py --scratch)     issue 14
#   control_scratch  the same network and loop without the HV loss (--hv-weight 0)  issue 14
#   types_scratch    UNet + nucleus-type head (benchmarks/type_head_joint.py --scratch) 15
# usage: bash scripts/gpu_session.sh BUDGET_S [EXTRA ARGS FOR EVERY RUN]
#   e.g. run(command="bash scripts/gpu_session.sh 420", carry=[".device/data", ".device/whl"],
#            timeout_s=570)
# Back here: python scripts/device_kit.py unpack FILES_AT /tmp/gpu_run, then score each on the
# validation tiles: python benchmarks/hv_head.py --evaluate-only --out /tmp/gpu_run/hv_scratch
# (and control_scratch; type_head_joint.py --evaluate-only --out /tmp/gpu_run/types_scratch).
# Batches (16 patches, strong augmentation, HV targets) are drawn by 4 threads per run: one
# Zen 4 thread makes 6.3 a second, two make 10.2 (1.6x), so 3 runs x 4 threads should feed
# ~20 steps/s each on the machine's 16 cores (an estimate: the GPU's share is unmeasured).
set -u
budget=$1; shift
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
work=$(mktemp -d)
common=(--data .device/data --train-only --time-budget "$budget" --epochs 100000 --steps 100
        --batch-size 16 --lr 1e-3 --workers 4 --scratch "$@")
# a run that hangs is stopped in time for the packing: what it saved still comes back
limit=$((budget + 120))
python3() { timeout -k 10 "$limit" python3 "$@"; }
python3 benchmarks/hv_head.py --out "$work/hv_scratch" "${common[@]}" 2>&1 \
  | grep -v -E "$quiet" > "$work/hv_scratch.log" &
python3 benchmarks/hv_head.py --out "$work/control_scratch" --hv-weight 0 "${common[@]}" 2>&1 \
  | grep -v -E "$quiet" > "$work/control_scratch.log" &
python3 benchmarks/type_head_joint.py --out "$work/types_scratch" "${common[@]}" 2>&1 \
  | grep -v -E "$quiet" > "$work/types_scratch.log" &
wait
for run in hv_scratch control_scratch types_scratch; do
  echo "== $run"; tail -n 4 "$work/$run.log"
done
command python3 scripts/device_kit.py pack "$work" "$OUT"
