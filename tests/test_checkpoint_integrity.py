"""A checkpoint's weights must fit its config.yaml (fingerprint) and be finite, at save and load."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

import maskconver.engine.train as train_module
from maskconver.build import build_model
from maskconver.cli import main
from maskconver.config import Config, config_from_dict, dump_config, list_presets, load_config
from maskconver.data.types import Category, CategorySet
from maskconver.engine.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    NonFiniteCheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from maskconver.engine.ema import ModelEma
from maskconver.engine.integrity import (
    FINGERPRINT_KEY,
    NETWORK_CONFIG_KEY,
    fingerprint_metadata,
    fingerprint_mismatch,
    network_config,
)
from maskconver.engine.train import NonFiniteLossError, NonFiniteWeightsError, train
from maskconver.predictor import Predictor

CATEGORIES = CategorySet(
    [Category(1, "thing", True, (1, 2, 3)), Category(5, "stuff", False, (4, 5, 6))]
)
DATA = Path(__file__).parent / "data"
OLD_FIXTURES = sorted(p.parent for p in DATA.glob("format*/*/step_*/meta.json"))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _save(root: Path, cfg: Config | None = None) -> Path:
    cfg = cfg or load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg.model, 2)
    return save_checkpoint(
        root,
        model=model,
        ema=ModelEma(model, 0.5),
        optimizer=None,
        step=3,
        config=cfg,
        categories=CATEGORIES,
        num_classes=2,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("ckpt"))


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit_yaml(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    tree = yaml.safe_load(path.read_text())
    edit(tree)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


def _one_line_error(call: Callable[[], object]) -> str:
    with pytest.raises(CheckpointError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------------------------
# the fingerprint


def test_weights_files_record_the_network_config(saved: Path) -> None:
    cfg = load_config("tiny")
    for name in ("model.safetensors", "ema.safetensors"):
        with safe_open(str(saved / name), framework="pt") as f:
            metadata = f.metadata()
        stored = json.loads(metadata[NETWORK_CONFIG_KEY])
        assert stored == network_config(cfg.model)
        assert len(metadata[FINGERPRINT_KEY]) == 64  # sha256 hex
        assert stored["model.maskconver.fusion"] == "mul"
        assert stored["model.head.activation"] == "relu"
        assert stored["model.num_proposals"] == 20
        # what does not change the network's computation is left out
        assert not any(k.startswith("model.maskconver.loss.") for k in stored)
        assert not any(k.startswith("model.maskconver.targets.") for k in stored)
        assert not any(k.startswith("model.maskconver.merge.") for k in stored)
        assert not any(k.startswith("model.dr1mask.") for k in stored)  # not selected
        assert "model.backbone.weights" not in stored


@pytest.mark.parametrize(
    ("section", "key", "old", "new"),
    [
        (("model", "head"), "activation", "relu", "gelu"),
        (("model", "backbone"), "activation", "relu", "gelu"),
        (("model", "maskconver"), "fusion", "mul", "add"),
    ],
)
def test_a_config_edited_against_its_weights_is_refused(
    saved: Path, tmp_path: Path, section: tuple[str, ...], key: str, old: str, new: str
) -> None:
    ckpt = _copy(saved, tmp_path / "ckpt")

    def edit(tree: dict[str, Any]) -> None:
        node = tree
        for name in section:
            node = node[name]
        assert node[key] == old
        node[key] = new

    _edit_yaml(ckpt / "config.yaml", edit)
    dotted = ".".join((*section, key))
    expected = f"{dotted}: {old!r} in the weights, {new!r} in config.yaml"
    for call in (lambda: load_checkpoint(ckpt), lambda: load_model(ckpt)):
        message = _one_line_error(call)
        assert expected in message and str(ckpt) in message
    with pytest.raises(CheckpointError, match=f"{dotted}: {old!r} in the weights"):
        Predictor.from_checkpoint(ckpt)


def test_untouched_checkpoint_and_edits_outside_the_network_load(
    saved: Path, tmp_path: Path
) -> None:
    model, cfg, _, n = load_model(saved)
    assert n == 2 and cfg == load_config("tiny")
    ckpt = _copy(saved, tmp_path / "ckpt")

    def edit(tree: dict[str, Any]) -> None:
        block = tree["model"]["maskconver"]
        block["merge"]["object_threshold"] = 0.3  # merge thresholds, losses, targets: not
        block["loss"]["bce_weight"] = 1.0  # the network
        block["targets"]["mask_stride"] = 1
        tree["model"]["backbone"]["weights"] = "/elsewhere/backbone.pth"
        tree["model"]["dr1mask"] = {"basis_width": 8}  # the unselected sub-block
        tree["train"]["lr"] = 0.5

    _edit_yaml(ckpt / "config.yaml", edit)
    loaded = load_checkpoint(ckpt)
    assert loaded.config.model.maskconver.merge.object_threshold == 0.3
    load_model(ckpt)


def test_a_tampered_fingerprint_is_refused(saved: Path, tmp_path: Path) -> None:
    ckpt = _copy(saved, tmp_path / "ckpt")
    path = ckpt / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    metadata[NETWORK_CONFIG_KEY] = metadata[NETWORK_CONFIG_KEY].replace('"mul"', '"add"')
    save_file(state, str(path), metadata=metadata)
    assert "corrupt metadata" in _one_line_error(lambda: load_checkpoint(ckpt))


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_keeps_its_fingerprint_through_config_yaml(preset: str) -> None:
    cfg = load_config(preset)
    read_back = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert fingerprint_metadata(read_back.model) == fingerprint_metadata(cfg.model)
    metadata = fingerprint_metadata(cfg.model)
    assert fingerprint_mismatch(metadata, read_back.model, version=FORMAT_VERSION) == []


@pytest.mark.parametrize(
    "fixture", OLD_FIXTURES, ids=lambda p: f"{p.parents[1].name}/{p.parent.name}"
)
def test_old_checkpoints_without_a_fingerprint_still_load(fixture: Path) -> None:
    with safe_open(str(fixture / "model.safetensors"), framework="pt") as f:
        assert FINGERPRINT_KEY not in (f.metadata() or {})
    loaded = load_checkpoint(fixture)
    assert loaded.format < 3 and loaded.model_state


def test_old_fixtures_are_found() -> None:
    assert len(OLD_FIXTURES) >= 5


# ----------------------------------------------------------------------------------------------
# non-finite weights


def _poison(path: Path, value: float) -> str:
    """Set one element of the second floating tensor of a weights file to ``value``."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    name = [k for k, v in state.items() if v.is_floating_point()][1]
    state[name].view(-1)[0] = value
    save_file(state, str(path), metadata=metadata)
    return name


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("file", ["model.safetensors", "ema.safetensors"])
def test_non_finite_weights_are_refused_at_load(
    saved: Path, tmp_path: Path, file: str, value: float
) -> None:
    ckpt = _copy(saved, tmp_path / "ckpt")
    tensor = _poison(ckpt / file, value)
    calls: list[Callable[[], object]] = [lambda: load_checkpoint(ckpt)]
    if file == "model.safetensors":
        calls.append(lambda: load_model(ckpt, use_ema=False))
    else:
        calls += [lambda: load_model(ckpt), lambda: Predictor.from_checkpoint(ckpt)]
    for call in calls:
        message = _one_line_error(call)
        assert str(ckpt / file) in message and repr(tensor) in message
        assert "non-finite" in message


def test_non_finite_weights_are_never_written(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    model = build_model(cfg.model, 2)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    first = next(name for name, _ in model.named_parameters())
    with pytest.raises(NonFiniteCheckpointError, match=f"model.safetensors.*{first!r}"):
        save_checkpoint(
            tmp_path,
            model=model,
            ema=None,
            optimizer=None,
            step=7,
            config=cfg,
            categories=CATEGORIES,
            num_classes=2,
        )
    assert list(tmp_path.iterdir()) == []  # neither step_000007 nor its tmp folder


TINY_RUN = [
    "train.batch_size=2",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.eval_every=0",
    "train.max_eval_images=2",
    "augment.input_size=[64,64]",
    "data.synthetic_train=4",
    "data.synthetic_val=2",
    "data.synthetic_min_size=64",
    "data.synthetic_max_size=80",
    "eval.input_size=64",
    "eval.batch_size=2",
]


def _cfg_args(*extra: str) -> list[str]:
    return TINY_RUN + list(extra)


def _cfg(*extra: str) -> Config:
    return load_config("tiny", _cfg_args(*extra))


def _nan_weights_at_step(monkeypatch: pytest.MonkeyPatch, bad_step: int) -> None:
    """The ``bad_step``-th optimizer step (1-based) leaves NaN weights; its loss was finite."""
    real = train_module.build_training_parts

    def parts_with_a_bad_step(cfg: Config, num_classes: int, info: Any) -> Any:
        parts = real(cfg, num_classes, info)
        step = parts.optimizer.step
        calls = [0]

        def patched(*args: Any, **kwargs: Any) -> Any:
            out = step(*args, **kwargs)
            calls[0] += 1
            if calls[0] == bad_step:
                with torch.no_grad():
                    next(parts.model.parameters()).fill_(float("nan"))
            return out

        parts.optimizer.step = patched
        return parts

    monkeypatch.setattr(train_module, "build_training_parts", parts_with_a_bad_step)


def test_training_that_makes_weights_non_finite_stops_before_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_weights_at_step(monkeypatch, 4)
    with pytest.raises(NonFiniteWeightsError) as info:
        train(_cfg("train.max_steps=4", "train.ckpt_every=2"), tmp_path, progress=False)
    message = str(info.value)
    good = tmp_path / "checkpoints" / "step_000002"
    assert "after step 4" in message and f"last good checkpoint is {good}" in message
    assert "the loss was finite" in message and "\n" not in message
    assert isinstance(info.value, NonFiniteLossError)  # the CLI's "run failed" exit code
    assert list_checkpoints(tmp_path) == [good]  # no step_000004, no tmp folder
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000002"]
    load_model(good)  # the last good one is good


def test_train_command_reports_non_finite_weights_as_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _nan_weights_at_step(monkeypatch, 1)
    sets = [a for item in _cfg_args("train.max_steps=1") for a in ("--set", item)]
    argv = ["train", "--config", "tiny", "--output-dir", str(tmp_path), "--no-progress", *sets]
    assert main(argv) == 1  # the run failed (not bad input)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "after step 1" in err and "none was written" in err
    assert list_checkpoints(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# resume


def test_resume_refuses_hand_edited_configs_and_changes_nothing(tmp_path: Path) -> None:
    cfg = _cfg("train.max_steps=2", "train.ckpt_every=1")
    train(cfg, tmp_path, progress=False, stop_at=1)
    run_config = tmp_path / "config.yaml"
    metrics = (tmp_path / "metrics.jsonl").read_text()
    original = run_config.read_text()

    # the run's config.yaml edited to another network: refused, not silently rewritten
    _edit_yaml(run_config, lambda t: t["model"]["maskconver"].update(fusion="add"))
    edited = run_config.read_text()
    with pytest.raises(CheckpointError) as info:
        train(cfg, tmp_path, resume=True, progress=False)
    message = str(info.value)
    assert str(run_config) in message and "model.maskconver.fusion: 'mul' -> 'add'" in message
    assert "nothing was written" in message and "\n" not in message
    assert run_config.read_text() == edited
    assert (tmp_path / "metrics.jsonl").read_text() == metrics

    # the checkpoint's config.yaml edited against its weights: refused before anything is written
    run_config.write_text(original)
    ckpt_config = tmp_path / "checkpoints" / "step_000001" / "config.yaml"
    _edit_yaml(ckpt_config, lambda t: t["model"]["head"].update(activation="gelu"))
    with pytest.raises(CheckpointError, match="model.head.activation: 'relu' in the weights"):
        train(cfg, tmp_path, resume=True, progress=False)
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    _edit_yaml(ckpt_config, lambda t: t["model"]["head"].update(activation="relu"))

    # keys a resumed run may change may be edited in the run's config.yaml
    _edit_yaml(run_config, lambda t: t["model"]["maskconver"]["loss"].update(bce_weight=1.0))
    _edit_yaml(run_config, lambda t: t["train"].update(lr=0.001))
    summary = train(cfg, tmp_path, resume=True, progress=False)
    assert summary["start_step"] == 1 and summary["steps"] == 2
    assert run_config.read_text() == original  # rewritten with the config the run resumed on


def test_the_run_config_check_reads_the_old_and_todays_layout(tmp_path: Path) -> None:
    from maskconver.engine.run_dir import check_resumable, check_run_config

    fixture = next((DATA / "format2" / "maskconver_tiny").glob("step_*"))
    saved, version = check_resumable(fixture, load_checkpoint(fixture).config)
    assert version == 2
    run_config = tmp_path / "config.yaml"
    run_config.write_text((fixture / "config.yaml").read_text())  # written at format 2
    check_run_config(tmp_path, fixture, saved, version)
    run_config.write_text(dump_config(saved))  # a resume by today's version wrote it
    check_run_config(tmp_path, fixture, saved, version)
    edited = dataclasses.replace(
        saved.model, maskconver=dataclasses.replace(saved.model.maskconver, fusion="mul")
    )
    run_config.write_text(dump_config(dataclasses.replace(saved, model=edited)))
    with pytest.raises(CheckpointError, match="model.maskconver.fusion: 'add' -> 'mul'"):
        check_run_config(tmp_path, fixture, saved, version)
