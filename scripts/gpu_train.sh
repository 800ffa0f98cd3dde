#!/usr/bin/env bash
# Runs on the GPU machine: install the carried wheels, train with Keras on JAX.
# usage: bash scripts/gpu_train.sh BUDGET_S MODEL_SPEC...
# .whl/ holds the wheels carried there (the machine reaches no index): pip download --no-deps
#   --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
#   --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex optree
#   (numba, scipy, scikit-image are in its image: device KINDS.md)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src KERAS_BACKEND=jax NUCLEOSEG_WRITE_SHIPPED=1 \
  NUCLEOSEG_USER_MODELS=/tmp/usermodels PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 scripts/gpu_train.py "$OUT" .gpu_data "$@" 2>&1 | grep -v -E "^(W|I|E)[0-9]{4} |Source Location|external/xla|^$|UserWarning|warnings.warn" | tee "$OUT/train.log"
