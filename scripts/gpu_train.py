"""Train the shipped models on a GPU machine (Keras on JAX), several in parallel.

Usage (see scripts/gpu_train.sh): python scripts/gpu_train.py OUT DATA BUDGET_S MODEL[:k=v,...] ...
Each model trains in its own process with a wall-clock budget; logs and weights go to OUT.
"""

import json
import os
import subprocess
import sys


def child(out: str, data: str, budget: float, spec: str) -> None:
    from nucleoseg.training.recipe import train_monuseg

    name, _, rest = spec.partition(":")
    config = {}
    save_name = name
    for kv in filter(None, rest.split(",")):
        k, v = kv.split("=")
        if k == "save":
            save_name = v
        else:
            config[k] = json.loads(v)
    train_monuseg(name, out, save_name=save_name, data=data, epochs=400, steps_per_epoch=200,
                  batch_size=16, learning_rate=1e-3, seed=0, config=config, workers=3,
                  time_budget=budget, log=lambda m: print(f"[{save_name}] {m}", flush=True))


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5])
        sys.exit(0)
    out, data, budget, *specs = sys.argv[1:]
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    procs = [
        subprocess.Popen([sys.executable, __file__, "--child", out, data, budget, s], env=env)
        for s in specs
    ]
    codes = [p.wait() for p in procs]
    print("exit codes", codes)
