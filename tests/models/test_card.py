"""The typed model card: one source of defaults, bounds and help; old cards migrate."""

import argparse
import json

import pytest

from nucleoseg.models.card import (
    CARD_VERSION,
    CardError,
    InferenceSettings,
    ModelCard,
    PostprocessParams,
    add_setting_flags,
    migrate,
    setting_values,
    setting_widget_options,
)


def test_version_1_card_migrates_and_keeps_its_record():
    old = {"architecture": "unet", "card_version": 1, "microns_per_pixel": 0.5,
           "inference": {"stride": 16, "tile": 1024, "halo": 32, "batch_size": 2,
                         "note": "why"},
           "postprocess": {"threshold": 0.4, "interior_threshold": 0.9, "min_size": 8,
                           "min_marker_size": 4},
           "training": {"seed": 0}, "test": {"dice": 0.8, "aji": 0.6}, "sha256": "ab"}
    card = ModelCard.from_dict(old)
    assert card.card_version == CARD_VERSION == 2
    assert card.inference == InferenceSettings(tile=1024, halo=32, batch_size=2, stride=16,
                                               microns_per_pixel=0.5, note="why")
    assert card.postprocess.threshold == 0.4 and card.postprocess.min_size == 8
    assert card.record == {"training": {"seed": 0}, "test": {"dice": 0.8, "aji": 0.6}}
    assert card.scores == {"dice": 0.8, "aji": 0.6} and card.sha256 == "ab"
    again = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
    assert again == card
    assert "microns_per_pixel" not in migrate(old) and old["microns_per_pixel"] == 0.5


def test_missing_settings_take_the_one_set_of_defaults():
    card = ModelCard.from_dict({"architecture": "unet"})
    assert card.inference == InferenceSettings()
    assert (card.inference.tile, card.inference.halo, card.inference.batch_size) == (2176, 64, 1)
    assert card.postprocess == PostprocessParams()
    # a null stride (written by old training runs) means "the default"
    assert ModelCard.from_dict({"inference": {"stride": None}}).inference.stride == 16


@pytest.mark.parametrize("bad, match", [
    ({"inference": {"tile": 10}}, "tile = 10 is outside"),
    ({"inference": {"tile": "big"}}, "tile must be int"),
    ({"postprocess": {"threshold": 1.5}}, "threshold = 1.5 is outside"),
    ({"postprocess": {"thresold": 0.5}}, "unknown PostprocessParams key"),
    ({"card_version": 99}, "newer than this nucleoseg"),
])
def test_bad_cards_are_refused_with_the_reason(bad, match):
    with pytest.raises(CardError, match=match):
        ModelCard.from_dict(bad)


def test_bad_card_file_gives_a_weights_error(tmp_path):
    from nucleoseg.models.weights import WeightsError, read_card

    (tmp_path / "m.keras").write_bytes(b"x")
    (tmp_path / "m.json").write_text(json.dumps({"postprocess": {"min_size": -1}}))
    with pytest.raises(WeightsError, match="m.json: min_size = -1 is outside"):
        read_card(tmp_path / "m.keras")
    (tmp_path / "m.json").write_text("[1, 2]")
    with pytest.raises(WeightsError, match="not a JSON object"):
        read_card(tmp_path / "m.keras")


def test_cli_flags_and_widget_fields_come_from_the_fields():
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, InferenceSettings, PostprocessParams)
    flags = {a.dest for a in parser._actions} - {"help"}
    # users set tiling and post-processing; network properties get no flag
    assert flags == {"tile", "halo", "batch_size", "threshold", "interior_threshold",
                     "min_size", "marker_dynamic"}
    args = parser.parse_args(["--tile", "512", "--threshold", "0.3"])
    values = setting_values(args, InferenceSettings, PostprocessParams)
    assert values["tile"] == 512 and values["threshold"] == 0.3 and values["halo"] is None
    help_text = parser.format_help()
    assert "nucleus probability threshold" in help_text and "0 to 1" in help_text
    opts = setting_widget_options(PostprocessParams, "threshold")
    assert opts["min"] == 0.0 and opts["max"] == 1.0 and opts["value"] == 0.5
    assert setting_widget_options(PostprocessParams, "min_size")["label"] == "min size (px)"


def test_every_shipped_card_reads_typed():
    from nucleoseg.models.weights import read_card, shipped_dir

    for path in sorted(shipped_dir().glob("*.keras")):
        card = read_card(path)
        assert card.architecture and card.sha256 and card.record["training"]
        assert card.inference.tile >= 64 and card.inference.stride in (16, 32)
