"""Does the type classifier's patch CNN gain from seeing more of the tissue around a nucleus?

The shipped patch net sees a 48 px crop (12 micrometres at 40x): the nucleus and its rim.
This benchmark trains, with the shipped recipe (same architecture, epochs, augmentation and
seed; each batch's nuclei gathered in sorted order), the net on two inputs:

- ``base``: the shipped input, 48 px RGB + the nucleus's mask (4 channels);
- ``two_scale``: that, plus the 96 px window around it at half resolution (RGB and the
  mask of every nucleus in it), stacked as 4 more channels of the same 48x48 grid
  (8 channels; the same FLOPs but for the first convolution).

Training nuclei: the CoNSeP fit tiles' true nuclei and the UNet's nuclei paired to them (as
``nucleoseg train-classifier``). Each net is then scored on the CoNSeP validation tiles'
UNet nuclei alone and inside the shipped classifier (its forests kept; the net's weight and
the class weights chosen from the recipe's grids, in-sample on the 5 tiles and
leave-one-tile-out). The test tiles are never read.

    python benchmarks/patch_context.py data            # segment + cut patches (cached)
    python benchmarks/patch_context.py train two_scale # ~20 min on the 2-core CPU
    python benchmarks/patch_context.py eval base two_scale shipped
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CACHE = Path(os.environ.get("PATCH_CONTEXT_CACHE", "/tmp/patch_context"))


def two_scale_patches(image: np.ndarray, labels: np.ndarray, ids: np.ndarray,
                      centres: np.ndarray) -> np.ndarray:
    """``(N, 48, 48, 8) uint8``: the shipped patch, then the 96 px window at half resolution
    (RGB, every nucleus's mask); the base net reads the first 4 channels."""
    from nucleoseg.classify.patch_net import nucleus_patches

    return nucleus_patches(image, labels, ids, centres, context=True)


def cmd_data(args) -> None:
    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.context import nucleus_centres
    from nucleoseg.evaluation.classification import centroids, pair_centroids
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.consep import list_tiles

    CACHE.mkdir(parents=True, exist_ok=True)
    seg = Segmenter.load("unet", precision="float32")
    shipped = NucleusClassifier.load("consep_types")
    t0 = time.perf_counter()
    fit_p, fit_y = [], []
    for t in list_tiles("fit", args.data):
        image, truth, types = t.image(), t.labels(), t.types()
        tid, tc = centroids(truth)
        y = np.array([types.get(int(i), 1) - 1 for i in tid], int)
        fit_p.append(two_scale_patches(image, truth, tid, tc))
        fit_y.append(y)
        pred = run(seg.segment(image))
        pid, pc = centroids(pred)
        pairs = pair_centroids(tc, pc)
        fit_p.append(two_scale_patches(image, pred, pid[pairs[:, 1]], pc[pairs[:, 1]]))
        fit_y.append(y[pairs[:, 0]])
        print(f"{t.name}: {len(tid)} true, {len(pairs)} paired ({time.perf_counter() - t0:.0f}s)",
              flush=True)
    np.savez(CACHE / "fit.npz", patches=np.concatenate(fit_p), targets=np.concatenate(fit_y))
    val = {}
    for t in list_tiles("val", args.data):
        image, truth, types = t.image(), t.labels(), t.types()
        pred = run(seg.segment(image))
        tid, tc = centroids(truth)
        pid, pc = centroids(pred)
        # the shipped forests' probabilities (context forest on, no patch net, no weights)
        net = shipped.patch_net
        shipped.patch_net, shipped.class_weights = None, None
        ids, forest_p = shipped.predict_proba(image, pred)
        shipped.patch_net, shipped.patch_weight = net, 1.0
        _, shipped_cnn = shipped.predict_proba(image, pred)
        assert (ids == pid).all()
        val[t.name] = dict(
            patches=two_scale_patches(image, pred, pid, nucleus_centres(pred, pid)),
            forest=forest_p, shipped=shipped_cnn, pc=pc, tc=tc,
            tt=np.array([types.get(int(i), 0) for i in tid], int))
    np.savez(CACHE / "val.npz", **{f"{n}/{k}": v for n, d in val.items() for k, v in d.items()})
    print(f"cached in {CACHE} ({time.perf_counter() - t0:.0f}s)")


def cmd_maps(args) -> None:
    """Every nucleus of every fit tile's two label maps (true, the UNet's), for stacking:
    features, centres, classed rows and targets, and two-scale patches of *all* nuclei."""
    from nucleoseg.classify.stacking import describe_tiles
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.consep import list_tiles

    seg = Segmenter.load("unet", precision="float32")
    tiles = list_tiles("fit", args.data)
    labels_of: dict[int, list[np.ndarray]] = {}

    def segment(image):
        out = run(seg.segment(image))
        labels_of.setdefault(len(labels_of), []).append(out)
        return out

    maps, _ = describe_tiles(tiles, segment)
    out = {}
    for i, m in enumerate(maps):
        t = tiles[m.tile]
        image = t.image()
        labels = t.labels() if i % 2 == 0 else labels_of[m.tile][0]
        from nucleoseg.evaluation.classification import centroids

        ids, centres = centroids(labels)
        assert np.allclose(centres, m.centres)
        out.update({f"{i}/tile": np.array(m.tile), f"{i}/features": m.features,
                    f"{i}/centres": m.centres, f"{i}/rows": m.rows, f"{i}/targets": m.targets,
                    f"{i}/patches": two_scale_patches(image, labels, ids, centres)})
    np.savez(CACHE / "maps.npz", **out)
    print(f"{len(maps)} maps of {len(tiles)} fit tiles cached")


def load_maps() -> list[dict]:
    with np.load(CACHE / "maps.npz") as z:
        maps: dict[int, dict] = {}
        for key in z.files:
            i, field = key.split("/")
            maps.setdefault(int(i), {})[field] = z[key]
    return [maps[i] for i in sorted(maps)]


def cmd_train(args) -> None:
    import keras

    from nucleoseg.classify.patch_net import _augment, build_patch_net
    from nucleoseg.models.precision import POLICIES, resolve_precision

    if args.fold is None:
        with np.load(CACHE / "fit.npz") as z:
            patches, targets = z["patches"], z["targets"]
    else:  # the maps of the other folds' tiles (tile k in fold k % folds, as stacking's)
        maps = load_maps()
        train = [m for m in maps if int(m["tile"]) % args.folds != args.fold]
        patches = np.concatenate([m["patches"][m["rows"]] for m in train])
        targets = np.concatenate([m["targets"] for m in train])
    channels = 4 if args.variant == "base" else 8
    patches = patches[..., :channels]
    n_classes = 4
    keras.utils.set_random_seed(args.seed)
    precision = resolve_precision("auto")
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    model = build_patch_net(n_classes, channels)
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    weights = np.sqrt(counts.sum() / (n_classes * np.maximum(counts, 1)))
    batch = 64
    steps = max(1, len(targets) // batch)
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, args.epochs * steps)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(len(targets))
        losses = []
        for s in range(steps):
            b = np.sort(order[s * batch:(s + 1) * batch])
            loss = model.train_on_batch(_augment(patches[b], rng), targets[b],
                                        sample_weight=weights[targets[b]])
            losses.append(float(np.asarray(loss).ravel()[0]))
        print(f"{args.variant} epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.4f} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
    keras.mixed_precision.set_global_policy("float32")
    plain = build_patch_net(n_classes, channels)
    plain.set_weights(model.get_weights())
    if args.fold is None:
        plain.save(CACHE / f"{args.variant}.keras")
        print(f"saved {CACHE / f'{args.variant}.keras'} after {time.perf_counter() - t0:.0f}s "
              f"({precision}, {len(targets)} nuclei)")
        return
    held = {str(i): plain.predict(m["patches"][..., :channels].astype(np.float32),
                                  batch_size=128, verbose=0)
            for i, m in enumerate(maps) if int(m["tile"]) % args.folds == args.fold}
    np.savez(CACHE / f"oof_{args.variant}_{args.fold}.npz", **held)
    print(f"fold {args.fold}: {len(targets)} training nuclei, {len(held)} maps predicted "
          f"({time.perf_counter() - t0:.0f}s)")


def cmd_eval(args) -> None:
    from nucleoseg.classify.recipe import (
        CLASS_WEIGHT_GRID,
        CONSEP_CLASSES,
        PATCH_WEIGHTS,
        class_weight_candidates,
        pooled_type_scores,
    )
    from nucleoseg.evaluation.classification import TypeCounts

    with np.load(CACHE / "val.npz") as z:
        val: dict[str, dict] = {}
        for key in z.files:
            name, field = key.split("/")
            val.setdefault(name, {})[field] = z[key]
    tiles = sorted(val)
    cnn: dict[str, dict[str, np.ndarray]] = {}
    for variant in args.variants:
        if variant == "shipped":
            cnn[variant] = {t: val[t]["shipped"] for t in tiles}
            continue
        import keras

        model = keras.models.load_model(CACHE / f"{variant}.keras")
        ch = model.inputs[0].shape[-1]
        cnn[variant] = {t: model.predict(val[t]["patches"][..., :ch].astype(np.float32),
                                         batch_size=128, verbose=0) for t in tiles}
    candidates = class_weight_candidates(CONSEP_CLASSES, CLASS_WEIGHT_GRID)
    rows = {}
    for variant, probs in cnn.items():
        # counts[tile][(w, candidate)]
        rules = [(w, k) for w in PATCH_WEIGHTS for k in range(len(candidates))]
        counts = []
        for t in tiles:
            d = val[t]
            per = []
            for w, k in rules:
                p = (1 - w) * d["forest"] + w * probs[t]
                per.append(TypeCounts().add(d["tc"], d["tt"], d["pc"],
                                            (p * candidates[k]).argmax(1) + 1))
            counts.append(per)

        def best(on: list[int], counts=counts) -> int:
            return max(range(len(counts[0])), key=lambda i: pooled_type_scores(
                [counts[k][i] for k in on])["mean_f_c"])

        alone = pooled_type_scores([TypeCounts().add(val[t]["tc"], val[t]["tt"], val[t]["pc"],
                                                     probs[t].argmax(1) + 1) for t in tiles])
        everything = list(range(len(tiles)))
        chosen = best(everything)
        in_sample = pooled_type_scores([counts[k][chosen] for k in everything])
        loo = pooled_type_scores([counts[k][best([j for j in everything if j != k])]
                                  for k in everything])
        rows[variant] = {"alone": alone, "chosen": {"patch_weight": rules[chosen][0],
                                                    "class_weights":
                                                        candidates[rules[chosen][1]].tolist()},
                         "in_sample": in_sample, "leave_one_tile_out": loo}
    keys = ("accuracy", "f_other", "f_inflammatory", "f_epithelial", "f_spindle", "mean_f_c")
    print(f"CoNSeP validation tiles ({len(tiles)}), UNet float32 nuclei; forests = shipped "
          "consep_types (context forest on)")
    print(f"| net | scored | {' | '.join(keys)} |")
    print("|---|---|" + "---|" * len(keys))
    for variant, r in rows.items():
        for what in ("alone", "in_sample", "leave_one_tile_out"):
            s = r[what]
            print(f"| {variant} | {what} | " + " | ".join(f"{s[k]:.4f}" for k in keys) + " |")
        print(f"| {variant} | chosen | {r['chosen']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float) + "\n")


def cmd_stack(args) -> None:
    """The recipe's classifier from the cached fit maps and the trained nets: a first
    forest, a plain context forest and one fed by the ``two_scale`` folds' out-of-fold
    probabilities, the ``two_scale`` net; stages and weights chosen on the validation tiles
    by ``recipe.choose_on_validation``; the shipped classifier scored beside it."""
    import keras

    from nucleoseg.classify.classifier import NucleusClassifier
    from nucleoseg.classify.recipe import (
        CONSEP_CLASSES,
        CONSEP_COLORS,
        best_rule,
        choose_on_validation,
        class_weight_candidates,
        class_weight_rule,
        counts_by_rule,
        evaluate_classifier,
        pooled_type_scores,
        rule_inputs,
    )
    from nucleoseg.classify.stacking import NucleusMap, fit_context_forest, training_set
    from nucleoseg.inference.predict import run
    from nucleoseg.inference.segment import Segmenter
    from nucleoseg.io.consep import list_tiles

    raw = load_maps()
    maps = [NucleusMap(int(m["tile"]), m["features"], m["centres"], m["rows"], m["targets"])
            for m in raw]
    oof: list = [None] * len(maps)
    for f in range(5):
        with np.load(CACHE / f"oof_two_scale_{f}.npz") as z:
            for i in z.files:
                oof[int(i)] = z[i]
    x, y = training_set(maps)
    t0 = time.perf_counter()
    clf = NucleusClassifier.fit(x, y, CONSEP_CLASSES, CONSEP_COLORS, trees=100, seed=0,
                                class_weight=None)
    context = fit_context_forest(maps, 4, 100, 0)
    context_net = fit_context_forest(maps, 4, 100, 0, 5, patch_proba=oof)
    print(f"forests fitted ({time.perf_counter() - t0:.0f}s)", flush=True)
    clf.patch_net = keras.models.load_model(CACHE / "two_scale.keras")
    clf.patch_context = True
    seg = Segmenter.load("unet", precision="float32")
    cache: dict[str, np.ndarray] = {}

    def segment(image):
        key = hashlib.sha1(image.tobytes()).hexdigest()
        if key not in cache:
            cache[key] = run(seg.segment(image))
        return cache[key]

    val = list_tiles("val", args.data)
    shipped = NucleusClassifier.load("consep_types")
    record = {"shipped": evaluate_classifier(shipped, val, segment)}
    print(f"shipped consep_types, validation, unet nuclei: {record['shipped']}", flush=True)
    validation = choose_on_validation(clf, context, val, segment, "unet_nuclei", 100, 0,
                                      context_net=context_net)
    record["new"] = validation
    import platform

    fit = list_tiles("fit", args.data)
    clf.card.update({
        "training": {**clf.card.get("training", {}),
                     "data": "CoNSeP training set, fit tiles: true nuclei and types, and the "
                             "unet model's nuclei paired to them (centroid <= 12 px) with the "
                             "true type",
                     "fit_tiles": [t.name for t in fit],
                     "validation_tiles": [t.name for t in val],
                     "hardware": f"{platform.processor() or platform.machine()} CPU (2 cores)",
                     "patch_epochs": 25, "patch_context": True, "patch_folds": 5,
                     "seconds_patch_net": args.seconds_patch_net,
                     "patch_nets_trained_by": "benchmarks/patch_context.py train two_scale "
                                              "[--fold k] (the recipe's train_patch_net "
                                              "settings, bfloat16)"},
        "validation": validation,
        "validation_of_the_previous_classifier": record["shipped"],
        "metrics": "HoVer-Net: centroid pairing <= 12 px, F_d, per-class F_c, accuracy",
        "license": "Derived from CoNSeP (Apache 2.0)"})
    out = clf.save(args.out, "consep_types")
    print(f"saved {out}: {clf.card['description']}")
    # the class weights chosen leaving each validation tile out, scored on it (pooled)
    cands = class_weight_candidates(CONSEP_CLASSES)
    for what, c in (("shipped", shipped), ("new", clf)):
        counts = counts_by_rule(rule_inputs(c, val, segment),
                                [class_weight_rule(w) for w in cands])
        k_all = range(len(val))
        record[f"{what}_leave_one_tile_out"] = pooled_type_scores(
            [counts[k][best_rule(counts, [j for j in k_all if j != k])] for k in k_all])
    for what, r in (("shipped", record["shipped"]), ("new", validation["unet_nuclei"]),
                    ("shipped, class weights leave-one-tile-out",
                     record["shipped_leave_one_tile_out"]),
                    ("new, class weights leave-one-tile-out", record["new_leave_one_tile_out"])):
        f = [r[f"f_{c}"] for c in CONSEP_CLASSES]
        print(f"{what}: accuracy {r['accuracy']:.4f}, F_c {' / '.join(f'{v:.4f}' for v in f)}"
              f", mean {np.mean(f):.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1, default=float) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("data")
    sub.add_parser("maps")
    tr = sub.add_parser("train")
    tr.add_argument("variant", choices=("base", "two_scale"))
    tr.add_argument("--epochs", type=int, default=25)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--fold", type=int, default=None,
                    help="train on the other folds' fit tiles, predict this fold's (stacking)")
    tr.add_argument("--folds", type=int, default=5)
    ev = sub.add_parser("eval")
    ev.add_argument("variants", nargs="+")
    ev.add_argument("--json", default=None)
    st = sub.add_parser("stack")
    st.add_argument("--out", default=str(CACHE / "classifier"))
    st.add_argument("--json", default=None)
    st.add_argument("--seconds-patch-net", type=float, default=None,
                    help="the nets' training time, for the card")
    args = ap.parse_args()
    {"data": cmd_data, "maps": cmd_maps, "train": cmd_train, "eval": cmd_eval,
     "stack": cmd_stack}[args.cmd](args)


if __name__ == "__main__":
    main()
