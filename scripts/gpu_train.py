"""Train models on a GPU machine (Keras on JAX), several in parallel.

Usage (see scripts/gpu_train.sh)::

    python scripts/gpu_train.py OUT DATA BUDGET_S MODEL[:k=v,...] ...

Each spec trains in its own process with a wall-clock budget, with nucleoseg's current
recipe (``train_recipe``: MoNuSeg + CoNSeP from DATA, strong augmentation, post-processing
chosen on the validation tiles); logs, weights and cards go to OUT. Keys:
``save`` (file name), ``init`` (start from these weights instead of from scratch),
``loss`` (``bce_dice_contact`` for the contact loss), ``contact_weight``, ``datasets``
(``monuseg+consep``), ``epochs``, ``steps``, ``batch``, ``lr``, ``precision``, ``schedule``
(``plateau``, the default: decay and early stopping within the budget; or ``cosine``, whose
``epochs`` must fit the budget); any other
key is a model setting (``config``). Example: ``unet:save=unet_c2,loss=bce_dice_contact,
contact_weight=2``.
"""

import json
import os
import subprocess
import sys

RECIPE_KEYS = {"save", "init", "loss", "contact_weight", "datasets", "epochs", "steps",
               "batch", "lr", "precision", "schedule"}


def parse_spec(spec: str) -> tuple[str, dict, dict]:
    """``MODEL[:k=v,...]`` -> (model, recipe options, model config)."""
    name, _, rest = spec.partition(":")
    options, config = {}, {}
    for kv in filter(None, rest.split(",")):
        k, v = kv.split("=", 1)
        if k in RECIPE_KEYS:
            options[k] = v
        else:
            config[k] = json.loads(v)
    return name, options, config


def child(out: str, data: str, budget: float, spec: str) -> None:
    from nucleoseg.training.recipe import STRONG_AUGMENTATION, train_recipe

    name, opt, config = parse_spec(spec)
    save_name = opt.get("save", name)
    train_recipe(
        name, out, save_name=save_name, data=data,
        datasets=tuple(opt.get("datasets", "monuseg+consep").split("+")),
        init=opt.get("init"), epochs=int(opt.get("epochs", 400)),
        steps_per_epoch=int(opt.get("steps", 200)), batch_size=int(opt.get("batch", 16)),
        learning_rate=float(opt.get("lr", 1e-3)), schedule=opt.get("schedule", "plateau"),
        augmentation=STRONG_AUGMENTATION, precision=opt.get("precision", "float32"),
        loss=opt.get("loss", "bce_dice"),
        contact_weight=float(opt["contact_weight"]) if "contact_weight" in opt else None,
        seed=0, config=config, workers=3, time_budget=budget,
        log=lambda m: print(f"[{save_name}] {m}", flush=True))


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
