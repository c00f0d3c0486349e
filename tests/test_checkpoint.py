"""Checkpoint directories: round-trip, atomicity, pruning, corrupt files, safe loading."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from maskconver.config import Config
from maskconver.data.types import Category, CategorySet
from maskconver.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from maskconver.engine.ema import ModelEma
from maskconver.engine.optim import build_optimizer

CATEGORIES = CategorySet(
    [Category(1, "thing", True, (1, 2, 3)), Category(5, "stuff", False, (4, 5, 6))]
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: much faster than two contended ones on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Arbitrary:
    """A non-primitive object: reading it back would need to run unpickling code."""


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)
    )


def _trained(steps: int = 2) -> tuple[nn.Module, ModelEma, torch.optim.Optimizer]:
    net = _net()
    ema = ModelEma(net, 0.9)
    cfg = Config()
    opt = build_optimizer(cfg.train, net)
    x = torch.randn(2, 3, 8, 8)
    for step in range(steps):
        net(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update(net, step)
    return net, ema, opt


def _save(root: Path, step: int, metrics: dict | None = None) -> Path:
    net, ema, opt = _trained()
    return save_checkpoint(
        root / "checkpoints",
        model=net,
        ema=ema,
        optimizer=opt,
        step=step,
        config=Config(),
        categories=CATEGORIES,
        num_classes=2,
        metrics=metrics,
        trainer_extra={"torch_rng": torch.get_rng_state(), "sampler": {"step": step}},
    )


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    net, ema, opt = _trained()
    cfg = Config()
    cfg.train.lr = 0.123
    path = save_checkpoint(
        tmp_path / "checkpoints",
        model=net,
        ema=ema,
        optimizer=opt,
        step=7,
        config=cfg,
        categories=CATEGORIES,
        num_classes=2,
        metrics={"all": {"pq": 0.25}},
    )
    assert path == tmp_path / "checkpoints" / "step_000007"
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["model.safetensors", "ema.safetensors", "config.yaml", "meta.json", "trainer.pt"]
    )
    for where in (path, path / "model.safetensors", tmp_path):  # dir, file inside, run dir
        loaded = load_checkpoint(where)
        assert loaded.step == 7 and loaded.num_classes == 2
    assert loaded.config.train.lr == 0.123
    assert [c.id for c in loaded.categories.categories] == [1, 5]
    assert loaded.categories.by_id[5].color == (4, 5, 6)
    assert loaded.metrics == {"all": {"pq": 0.25}}

    x = torch.randn(1, 3, 8, 8)
    net.eval()
    fresh = _net().eval()
    with torch.no_grad():
        fresh[0].weight.add_(1.0)  # make sure loading really overwrites
    fresh.load_state_dict(loaded.model_state)
    torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)
    fresh.load_state_dict(loaded.ema_state)
    torch.testing.assert_close(fresh(x), ema.module(x), rtol=0, atol=0)

    opt2 = build_optimizer(Config().train, fresh)
    opt2.load_state_dict(loaded.trainer_state["optimizer"])
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    torch.testing.assert_close(opt2.state_dict()["state"][0]["momentum_buffer"], buf)


def test_trainer_state_loads_with_weights_only(tmp_path: Path) -> None:
    path = _save(tmp_path, 3)
    state = torch.load(path / "trainer.pt", weights_only=True)
    assert state["step"] == 3 and state["sampler"] == {"step": 3}
    assert isinstance(state["torch_rng"], torch.Tensor)


def test_trainer_state_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, 3)

    torch.save({"step": 3, "evil": _Arbitrary()}, path / "trainer.pt")
    with pytest.raises(CheckpointError, match="trainer.pt"):
        load_checkpoint(path)


def test_tmp_leftovers_are_ignored(tmp_path: Path) -> None:
    _save(tmp_path, 2)
    # a crashed writer leaves step_000009.tmp-<pid>, even with a meta.json inside
    leftover = tmp_path / "checkpoints" / "step_000009.tmp-12345"
    leftover.mkdir()
    (leftover / "meta.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_000002"
    assert latest_checkpoint(tmp_path / "nothing-here") is None


def test_corrupt_or_missing_files_name_the_file(tmp_path: Path) -> None:
    path = _save(tmp_path, 1)
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(path)
    path = _save(tmp_path, 2)
    (path / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match="config.yaml"):
        load_checkpoint(path)
    path = _save(tmp_path, 3)
    (path / "meta.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="meta.json"):
        load_checkpoint(path)
    path = _save(tmp_path, 4)
    (path / "trainer.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="trainer.pt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing")


def test_prune_keeps_last_and_best_copy(tmp_path: Path) -> None:
    for step, pq in [(1, 0.1), (2, 0.5), (3, 0.3), (4, 0.2)]:
        _save(tmp_path, step, {"all": {"pq": pq}})
    best = prune_checkpoints(tmp_path, keep_last=2, keep_best_by="pq")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000003", "step_000004"]
    # step 2 (pq 0.5) is gone from step_* but survives as a real copy in best/
    assert best == tmp_path / "checkpoints" / "best"
    assert json.loads((best / "meta.json").read_text())["step"] == 2
    assert load_checkpoint(best).step == 2
    # a worse new checkpoint keeps best; a better one replaces it
    _save(tmp_path, 5, {"all": {"pq": 0.4}})
    prune_checkpoints(tmp_path, keep_last=2)
    assert load_checkpoint(best).step == 2
    _save(tmp_path, 6, {"pq": 0.9})
    prune_checkpoints(tmp_path, keep_last=2)
    assert load_checkpoint(best).step == 6
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000005", "step_000006"]
    # "best" is never taken as the latest checkpoint to resume from
    assert latest_checkpoint(tmp_path).name == "step_000006"


def test_prune_without_metrics_keeps_no_best(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        _save(tmp_path, step)
    assert prune_checkpoints(tmp_path, keep_last=0) is None  # keep_last 0 keeps all
    assert len(list_checkpoints(tmp_path)) == 3


def test_load_model_rebuilds_tiny_model_with_identical_outputs(tmp_path: Path) -> None:
    from maskconver.build import build_model
    from maskconver.config import load_config
    from maskconver.engine.checkpoint import load_model

    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg.model, 2)
    ema = ModelEma(model, 0.5, warmup=False)
    model.train()
    model(torch.rand(2, 3, 64, 64) * 255)  # move BN statistics away from their init
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    ema.update(model, step=0)  # EMA = halfway between init and the current weights
    path = save_checkpoint(
        tmp_path,
        model=model,
        ema=ema,
        optimizer=None,
        step=1,
        config=cfg,
        categories=CATEGORIES,
        num_classes=2,
    )
    images = torch.rand(1, 3, 64, 64) * 255
    model.eval()
    with torch.no_grad():
        raw, averaged = model(images), ema.module(images)
        loaded_raw, cfg2, cats, n = load_model(path, use_ema=False)
        loaded_ema, *_ = load_model(path / "ema.safetensors")  # a file inside works too
        assert n == 2 and cfg2 == cfg and [c.id for c in cats.categories] == [1, 5]
        assert not loaded_raw.training
        for got, want in ((loaded_raw(images), raw), (loaded_ema(images), averaged)):
            torch.testing.assert_close(got.mask_logits, want.mask_logits, rtol=0, atol=0)
            torch.testing.assert_close(got.center_logits[0], want.center_logits[0], rtol=0, atol=0)
    assert not torch.equal(raw.mask_logits, averaged.mask_logits)  # EMA really differs
