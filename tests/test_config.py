"""Config: defaults, YAML round-trips, overrides, strict errors, and the ``config`` command."""

from __future__ import annotations

import argparse

import pytest
import yaml

from maskconver.commands import config_cmd
from maskconver.config import (
    Config,
    ConfigError,
    config_from_dict,
    dump_config,
    list_presets,
    load_config,
    merge_overrides,
    to_dict,
)

SHIPPED = ["mobilenet_mh_256", "mobilenet_mh_640", "resnet50_unet", "tiny"]


def test_defaults_are_valid_and_equal_an_empty_file() -> None:
    assert load_config() == Config()
    assert config_from_dict({}) == Config()


@pytest.mark.parametrize("name", [None, *SHIPPED])
def test_yaml_round_trip(name: str | None) -> None:
    cfg = load_config(name)
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


def test_round_trip_through_a_file(tmp_path: object) -> None:
    cfg = load_config("tiny", ["train.lr=0.123"])
    path = tmp_path / "cfg.yaml"  # type: ignore[operator]
    path.write_text(dump_config(cfg))
    assert load_config(str(path)) == cfg


def test_overrides_parse_yaml_values_and_nest() -> None:
    cfg = load_config(
        "tiny",
        [
            "train.lr=0.5",
            "model.decoder.dilation_rates=[1, 2]",
            "model.num_classes=9",
            "train.ema=false",
            "model.backbone.weights=null",
        ],
    )
    assert cfg.train.lr == 0.5 and cfg.model.decoder.dilation_rates == [1, 2]
    assert cfg.model.num_classes == 9 and cfg.train.ema is False
    # the preset value is kept where not overridden
    assert cfg.model.head.channels == load_config("tiny").model.head.channels
    again = merge_overrides(cfg, ["train.lr=1"])
    assert again.train.lr == 1.0 and isinstance(again.train.lr, float) and cfg.train.lr == 0.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.hed.channels=3",
            "unknown config key 'model.hed' \\(did you mean 'model.head'\\?\\)",
        ),
        ("train.lrr=3", "unknown config key 'train.lrr' \\(did you mean 'train.lr'\\?\\)"),
        ("train.lr=fast", "train.lr: expected a number, got 'fast'"),
        ("model.decoder.name=unet", "model.decoder.name: 'unet' is not one of"),
        ("train.lr", "must look like section.key=value"),
        ("model.num_proposals=0", "num_proposals must be >= 1"),
        (
            "model.maskconver.mask_level=4",
            "need mask_level <= level \\(got mask_level 4, level 3\\)",
        ),
    ],
)
def test_bad_overrides_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_unknown_preset_hint() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'tinny' \\(did you mean 'tiny'\\?\\)"):
        load_config("tinny")


def test_every_shipped_preset_is_listed() -> None:
    assert set(SHIPPED) <= set(list_presets())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    config_cmd.register(p.add_subparsers())
    return p


def test_config_show_prints_resolved_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["config", "show", "tiny", "--set", "train.lr=0.25"])
    assert args.func(args) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == to_dict(load_config("tiny", ["train.lr=0.25"]))
    assert shown["train"]["lr"] == 0.25


def test_one_set_takes_several_overrides_and_repeats_accumulate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "config",
        "show",
        "tiny",
        "--set",
        "train.lr=0.25",
        "train.max_steps=7",
        "--set",
        "model.num_proposals=9",
    ]
    args = parser().parse_args(argv)
    assert args.overrides == ["train.lr=0.25", "train.max_steps=7", "model.num_proposals=9"]
    assert args.func(args) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["train"]["lr"], shown["train"]["max_steps"]) == (0.25, 7)
    assert shown["model"]["num_proposals"] == 9


def test_config_show_bad_key_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["config", "show", "tiny", "--set", "model.hed=1"])
    assert args.func(args) == 2
    assert "did you mean 'model.head'" in capsys.readouterr().err


def test_config_list(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["config", "list"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_presets()
    assert any(line.startswith("mobilenet_mh_256") and "29.7 PQ" in line for line in lines)


@pytest.mark.parametrize(
    ("preset", "override", "old", "new"),
    [
        ("tiny", "loss.bce_weight=3", "loss.bce_weight", "model.maskconver.loss.bce_weight"),
        (
            "tiny",
            "targets.mask_stride=2",
            "targets.mask_stride",
            "model.maskconver.targets.mask_stride",
        ),
        ("tiny", "model.level=2", "model.level", "model.maskconver.level"),
        (
            "tiny",
            "postprocess.merge=maskformer",
            "postprocess.merge",
            "model.maskconver.merge.mode",
        ),
        (
            "tiny",
            "postprocess.min_area=3",
            "postprocess.min_area",
            "model.maskconver.merge.min_area",
        ),
        (
            "dr1mask_small",
            "postprocess.object_threshold=0.2",
            "postprocess.object_threshold",
            "model.dr1mask.merge.object_threshold",
        ),
        (
            "dr1mask_small",
            "model.dr1mask.merge=paste",
            "model.dr1mask.merge",
            "model.dr1mask.merge.mode",
        ),
        (
            "dr1mask_small",
            "model.dr1mask.box_crop=true",
            "model.dr1mask.box_crop",
            "model.dr1mask.merge.box_crop",
        ),
    ],
)
def test_an_old_key_names_its_new_place(preset: str, override: str, old: str, new: str) -> None:
    message = f"config key '{old}' moved to '{new}'"
    with pytest.raises(ConfigError) as raised:
        load_config(preset, [override])
    assert str(raised.value) == message
    with pytest.raises(ConfigError) as raised:
        merge_overrides(load_config(preset), [override])
    assert str(raised.value) == message
    # the new key takes the same value
    load_config(preset, [f"{new}={override.split('=', 1)[1]}"])


@pytest.mark.parametrize("arch", ["maskconver", "dr1mask"])
def test_a_format2_tree_migrates_to_the_sub_blocks(arch: str) -> None:
    from maskconver.config import migrate_config_tree

    tree = {
        "model": {
            "meta_architecture": arch,
            "level": 2,
            "hard_sigmoid": True,
            "num_proposals": 30,
            "dr1mask": {"merge": "paste", "box_crop": True, "mask_size": 14},
        },
        "targets": {"mask_stride": 2},
        "loss": {"bce_weight": 3.0},
        "postprocess": {"merge": "maskformer", "object_threshold": 0.2, "max_canvas_pixels": 9},
    }
    out = migrate_config_tree(tree, 2)
    assert out["model"]["maskconver"] == {
        "level": 2,
        "hard_sigmoid": True,
        "targets": {"mask_stride": 2},
        "loss": {"bce_weight": 3.0},
        "merge": {
            "mode": "maskformer",
            **({"object_threshold": 0.2} if arch == "maskconver" else {}),
        },
    }
    assert out["model"]["dr1mask"] == {
        "mask_size": 14,
        "merge": {
            "mode": "paste",
            "box_crop": True,
            **({"object_threshold": 0.2} if arch == "dr1mask" else {}),
        },
    }
    assert out["postprocess"] == {"max_canvas_pixels": 9}
    assert out["model"]["num_proposals"] == 30 and "targets" not in out and "loss" not in out
    assert tree["model"]["level"] == 2  # the input is left as it was
    assert migrate_config_tree(out, 3) == out


def test_only_the_selected_meta_architecture_is_checked() -> None:
    bad_maskconver = "model.maskconver.loss.bce_weight=-1"
    with pytest.raises(
        ConfigError, match="model.maskconver.loss.bce_weight must be a finite number >= 0, got -1.0"
    ):
        load_config("tiny", [bad_maskconver])
    assert load_config("dr1mask_small", [bad_maskconver]).model.maskconver.loss.bce_weight == -1
    bad_dr1mask = "model.dr1mask.merge.object_threshold=.nan"
    with pytest.raises(
        ConfigError, match="model.dr1mask.merge.object_threshold must be finite, got nan"
    ):
        load_config("dr1mask_small", [bad_dr1mask])
    load_config("tiny", [bad_dr1mask])
