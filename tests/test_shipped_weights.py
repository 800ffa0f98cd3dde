"""The shipped weights reproduce their model cards on the MoNuSeg test tiles (CPU)."""

import json

import pytest

from nucleoseg.models.weights import load_model, sha256, shipped_dir, shipped_models

SHIPPED = ["unet", "unet_lite", "segnet", "deeplabv3", "se_unet"]


def test_every_shipped_model_has_a_complete_card():
    assert set(SHIPPED) <= set(shipped_models())
    for name in SHIPPED:
        path = shipped_dir() / f"{name}.keras"
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["sha256"] == sha256(path)
        assert path.stat().st_size < 40e6
        for key in ("architecture", "config", "input", "inference", "postprocess", "training",
                    "validation", "test", "license"):
            assert key in card, (name, key)
        assert card["training"]["validation_tiles"] and card["training"]["seed"] == 0
        model, _ = load_model(path)
        assert model.output_shape[-1] == 2


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["monuseg", "consep"])
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_reproduces_card_on_both_test_sets(name, dataset, data_root):
    """Each shipped model reproduces its card's MoNuSeg-test and CoNSeP-test numbers, at
    pooled Dice >= 0.80 on both; on CoNSeP, the shipped type classifier on its nuclei
    reproduces the card's nucleus-type metrics too."""
    from nucleoseg.evaluation.benchmark import benchmark
    from nucleoseg.inference.predict import run

    card = json.loads((shipped_dir() / f"{name}.json").read_text())
    expected = card["test_by_dataset"][dataset]
    classifier = expected["types"]["classifier"] if "types" in expected else None
    row = run(benchmark([name], data_root, include_baseline=False, dataset=dataset,
                        precision=expected["compute_precision"], classifier=classifier))[0]
    assert row["dice"] == pytest.approx(expected["dice"], abs=0.005)
    assert row["aji"] == pytest.approx(expected["aji"], abs=0.01)
    assert row["dice"] >= 0.80  # issue 14: every shipped model, both test sets
    if classifier is not None:  # issue 15: the README's nucleus-type table
        for key in ("f_d", "accuracy", "f_other", "f_inflammatory", "f_epithelial",
                    "f_spindle"):
            assert row["types"][key] == pytest.approx(expected["types"][key], abs=0.01), key
