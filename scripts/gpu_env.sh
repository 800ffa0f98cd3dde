# Sourced by the GPU-machine scripts: the carried Keras wheels installed (the machine reaches
# no index; NUCLEOSEG_NO_WHEELS=1 in a CPU rehearsal keeps its own environment), Keras on
# JAX, GPU memory taken as needed (several processes share one GPU), and the log noise that
# `grep -v -E "$quiet"` drops.
if [ -z "${NUCLEOSEG_NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
fi
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 \
  NUCLEOSEG_USER_MODELS=/tmp/usermodels
quiet='^(W|I|E)[0-9]{4} |^WARNING: All log messages|Source Location|external/xla|UserWarning|warnings.warn'
