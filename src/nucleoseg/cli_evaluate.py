"""``nucleoseg evaluate`` and ``nucleoseg benchmark``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli import UsageError, _progress_bar


# ---------------------------------------------------------------- evaluate
def _pairs(pred: Path, truth: Path) -> list[tuple[str, Path, Path]]:
    if pred.is_dir() != truth.is_dir():
        raise UsageError("give two files or two folders")
    if not pred.is_dir():
        return [(pred.stem, pred, truth)]
    from .io.labels import LABEL_SUFFIXES

    def index(folder: Path) -> dict[str, Path]:
        out = {}
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in LABEL_SUFFIXES:
                out[p.stem.removesuffix("_labels")] = p
        return out

    a, b = index(pred), index(truth)
    common = sorted(set(a) & set(b))
    if not common:
        raise UsageError(f"no file names in common between {pred} and {truth}")
    return [(k, a[k], b[k]) for k in common]


def _is_xml(path: Path) -> bool:
    return path.suffix.lower() == ".xml"


def _parse_shape(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--shape expects HxW (e.g. 1000x1000), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise UsageError(f"--shape must be positive, got {text!r}")
    return h, w


def _evaluate_classes(args: argparse.Namespace, rows_in: list) -> None:
    """Nucleus-type metrics (HoVer-Net's) of one prediction/truth pair with class tables."""
    from .evaluation.classification import named_type_scores
    from .io.consep import read_classes

    if not (args.pred_classes and args.truth_classes):
        raise UsageError("give both --pred-classes and --truth-classes")
    if len(rows_in) != 1:
        raise UsageError("class tables go with one prediction and one ground truth file")
    _, pred, truth = rows_in[0]
    s, names = named_type_scores(truth, read_classes(args.truth_classes), pred,
                                 read_classes(args.pred_classes))
    print(f"nucleus types (centroid pairing <= 12 px): F_d {s['f_d']:.4f}  accuracy "
          f"{s['accuracy']:.4f}  paired {s['paired']}  unpaired prediction "
          f"{s['unpaired_pred']}  unpaired truth {s['unpaired_true']}")
    print("  " + "  ".join(f"F_{n} {s['f_' + n]:.4f}" for n in names))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.metrics import ALL_KEYS, evaluate_set
    from .io.labels import read_labels, xml_image_shape

    shape = _parse_shape(args.shape) if args.shape else None
    rows_in = []
    pairs = _pairs(Path(args.prediction), Path(args.truth))
    print(f"prediction: {args.prediction}   ground truth: {args.truth}")
    for name, p, t in pairs:
        # outlines (XML) are drawn at the image's own size, never at the other file's
        pred = read_labels(p, shape or (xml_image_shape(p) if _is_xml(p) else None))
        truth = read_labels(t, shape or (xml_image_shape(t) if _is_xml(t) else None))
        if pred.shape != truth.shape:
            raise UsageError(f"{name}: prediction {pred.shape} and ground truth {truth.shape} "
                             "differ in shape")
        rows_in.append((name, pred, truth))
    per_image, overall = evaluate_set([(p, t) for _, p, t in rows_in],
                                      names=[n for n, _, _ in rows_in])
    if args.pred_classes or args.truth_classes:
        _evaluate_classes(args, rows_in)
    keys = list(ALL_KEYS)
    rows = per_image + ([{"name": "overall", **overall}] if len(per_image) > 1 else [])
    print("  ".join([f"{'image':<28}"] + [f"{k:>9}" for k in keys]))
    for r in rows:
        print("  ".join([f"{r['name'][:28]:<28}"] + [f"{r[k]:>9.4f}" for k in keys]))
    if args.csv:
        import csv

        from .io.atomic import atomic_write

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["name", *keys], extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)

        atomic_write(args.csv, write)
    return 0


# ---------------------------------------------------------------- benchmark
def cmd_benchmark(args: argparse.Namespace) -> int:
    from .evaluation.benchmark import TITLES, benchmark, format_table, format_types_table
    from .inference.predict import run
    from .io.datasets import parse_datasets, present
    from .models.weights import available_models

    models = args.models or [m["name"] for m in available_models() if m["source"] == "shipped"]
    if not models:
        raise UsageError("no models to benchmark")
    try:
        datasets = parse_datasets(args.datasets, held_out=True) if args.datasets \
            else present(args.data)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not datasets:
        raise UsageError("no data set found (set NUCLEOSEG_DATA or pass --data)")
    tables = {}
    for ds in datasets:
        bar, update = _progress_bar(f"benchmark {ds}", not args.quiet)
        rows = run(benchmark(models, args.data, split=args.split,
                             include_baseline=not args.no_baseline, limit=args.limit,
                             precision=args.precision, dataset=ds, stain=args.stain,
                             tta=args.tta,
                             classifier=None if args.no_classify else args.classifier), update)
        bar.close()
        used = sorted({r["compute_precision"] for r in rows if "compute_precision" in r})
        print(f"{TITLES.get(ds, ds)} {args.split} tiles ({len(rows[0]['per_image'])}), metrics "
              f"pooled over all pixels/nuclei of the set; precision {', '.join(used) or '-'}"
              f"{'; models with --tta (4 flips)' if args.tta else ''}")
        print(format_table(rows, markdown=args.markdown))
        types = format_types_table(rows, markdown=args.markdown)
        if types:
            print(f"\nnucleus types ({rows[0]['types']['classifier']}; HoVer-Net metrics: "
                  "centroid pairing <= 12 px)")
            print(types)
        print()
        tables[ds] = rows
    if args.json:
        from .io.atomic import atomic_write_bytes

        payload = tables if len(tables) > 1 else next(iter(tables.values()))
        atomic_write_bytes(args.json, (json.dumps(payload, indent=2) + "\n").encode())
    return 0
