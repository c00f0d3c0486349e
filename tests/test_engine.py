"""EMA, learning-rate schedule, weight-decay groups and training data: hand-derived expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from maskconver.config import TrainConfig
from maskconver.data.coco_panoptic import DatasetError
from maskconver.data.types import PanopticSample
from maskconver.engine.ema import ModelEma
from maskconver.engine.loader import StepSampler, TrainSampleDataset, collate_train
from maskconver.engine.optim import build_optimizer, lr_at, param_groups
from maskconver.meta.maskconver.targets.types import Targets


def _scalar_model(value: float) -> nn.Linear:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def _set(model: nn.Linear, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)


def test_ema_warmup_decay_by_hand() -> None:
    model = _scalar_model(1.0)
    ema = ModelEma(model, 0.5, warmup=True)
    # step 0: d = min(0.5, (1+0)/(10+0)) = 0.1 -> ema = 0.1 * 1 + 0.9 * 2 = 1.9
    _set(model, 2.0)
    ema.update(model, step=0)
    assert ema.module.weight.item() == pytest.approx(1.9, abs=1e-6)
    # step 1: d = min(0.5, 2/11) = 2/11 -> ema = (2 * 1.9 + 9 * 3) / 11 = 30.8 / 11 = 2.8
    _set(model, 3.0)
    ema.update(model, step=1)
    assert ema.module.weight.item() == pytest.approx(2.8, abs=1e-6)
    # step 20: (1+20)/(10+20) = 0.7 > 0.5, so the target decay 0.5 applies
    assert ema.decay_at(20) == 0.5
    assert ema.decay_at(1) == pytest.approx(2 / 11)


def test_ema_without_warmup_and_frozen_copy() -> None:
    model = _scalar_model(1.0)
    ema = ModelEma(model, 0.5, warmup=False)
    _set(model, 2.0)
    ema.update(model, step=0)
    # d = 0.5 from the start: 0.5 * 1 + 0.5 * 2 = 1.5
    assert ema.module.weight.item() == pytest.approx(1.5)
    assert not ema.module.weight.requires_grad
    assert not ema.module.training
    # the model itself is untouched by the update
    assert model.weight.item() == 2.0


def test_ema_averages_bn_buffers_and_copies_counters() -> None:
    model = nn.BatchNorm1d(1)
    ema = ModelEma(model, 0.5, warmup=False)
    model.running_mean.fill_(4.0)  # ema starts at 0 -> 0.5 * 0 + 0.5 * 4 = 2
    model.num_batches_tracked.fill_(7)  # integers are copied, not averaged
    ema.update(model, step=0)
    assert ema.module.running_mean.item() == pytest.approx(2.0)
    assert int(ema.module.num_batches_tracked) == 7


def test_ema_state_dict_round_trip_and_ddp_style_wrapper() -> None:
    model = _scalar_model(1.0)
    ema = ModelEma(model, 0.5, warmup=False)

    class Wrapper(nn.Module):  # what DistributedDataParallel looks like to ModelEma
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    _set(model, 3.0)
    ema.update(Wrapper(model), step=0)  # 0.5 * 1 + 0.5 * 3 = 2
    other = ModelEma(_scalar_model(0.0), 0.5)
    other.load_state_dict(ema.state_dict())
    assert other.module.weight.item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="decay"):
        ModelEma(model, 1.5)


def test_lr_at_hand_values() -> None:
    kw = dict(base_lr=1.0, warmup_steps=10, total_steps=100)
    # cosine(10) = 0.5 * (1 + cos(pi * 10 / 100)) = 0.5 * (1 + 0.9510565163) = 0.9755282581
    cos10 = 0.5 * (1 + 0.9510565163)
    assert lr_at(0, **kw) == 0.0  # warmup starts from 0
    assert lr_at(5, **kw) == pytest.approx(cos10 / 2, abs=1e-9)  # straight line to cosine(10)
    assert lr_at(10, **kw) == pytest.approx(cos10, abs=1e-9)  # warmup end joins the cosine
    assert lr_at(50, **kw) == pytest.approx(0.5, abs=1e-12)  # cos(pi/2) = 0
    assert lr_at(100, **kw) == pytest.approx(0.0, abs=1e-12)  # end: cos(pi) = -1
    assert lr_at(150, **kw) == pytest.approx(0.0, abs=1e-12)  # clamped after the end
    # min_lr_ratio 0.1: min_lr = 0.1; middle = 0.1 + 0.9 * 0.5 = 0.55; end = 0.1
    assert lr_at(50, **kw, min_lr_ratio=0.1) == pytest.approx(0.55)
    assert lr_at(100, **kw, min_lr_ratio=0.1) == pytest.approx(0.1)
    # no warmup: step 0 is the full base lr
    assert lr_at(0, base_lr=0.04, warmup_steps=0, total_steps=10) == pytest.approx(0.04)
    assert math.isclose(
        lr_at(25, base_lr=2.0, warmup_steps=0, total_steps=100), 1 + math.cos(math.pi / 4)
    )
    with pytest.raises(ValueError, match="total_steps"):
        lr_at(0, base_lr=1.0, warmup_steps=0, total_steps=0)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(4, 4, 1)
        self.depthwise = nn.Conv2d(4, 4, 7, padding=3, groups=4)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)  # grouped, not depthwise
        self.norm = nn.BatchNorm2d(4)
        self.layer_norm = nn.LayerNorm(4)
        self.gamma = nn.Parameter(torch.full((4,), 1e-6))  # layer scale
        self.linear = nn.Linear(4, 4)
        self.class_embedding = nn.Embedding(3, 4)


def test_param_groups_coverage() -> None:
    net = _Net()
    decay, no_decay = param_groups(net, 1e-5)
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    assert set(decay["names"]) == {
        "pointwise.weight",
        "grouped.weight",
        "linear.weight",
        "class_embedding.weight",
    }
    assert set(no_decay["names"]) == {
        "pointwise.bias",
        "depthwise.weight",
        "depthwise.bias",
        "grouped.bias",
        "norm.weight",
        "norm.bias",
        "layer_norm.weight",
        "layer_norm.bias",
        "gamma",
        "linear.bias",
    }
    # every trainable parameter exactly once
    n_params = len(list(net.parameters()))
    assert len(decay["params"]) + len(no_decay["params"]) == n_params
    decay_dw, _ = param_groups(net, 1e-5, decay_depthwise=True)
    assert "depthwise.weight" in decay_dw["names"]
    net.norm.weight.requires_grad_(False)  # frozen parameters are left out
    assert "norm.weight" not in param_groups(net, 1e-5)[1]["names"]


def test_sgd_l2_only_on_decay_group() -> None:
    net = _Net()
    opt = build_optimizer(
        TrainConfig(optimizer="sgd", lr=0.1, weight_decay=0.01, momentum=0.9), net
    )
    w0 = net.pointwise.weight.detach().clone()
    b0 = net.pointwise.bias.detach().clone()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    # zero loss gradient: L2 gradient wd * w -> w - lr * wd * w = w * (1 - 0.1 * 0.01)
    torch.testing.assert_close(net.pointwise.weight.detach(), w0 * (1 - 0.001))
    torch.testing.assert_close(net.pointwise.bias.detach(), b0)


def test_adamw_is_decoupled() -> None:
    net = _Net()
    opt = build_optimizer(TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.05), net)
    w0 = net.linear.weight.detach().clone()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    # zero gradient: Adam update is 0, decoupled decay w -= lr * wd * w = w * (1 - 0.005)
    torch.testing.assert_close(net.linear.weight.detach(), w0 * (1 - 0.005))
    assert isinstance(opt, torch.optim.AdamW)


# ---------------------------------------------------------------------------------------------
# Data loading: keyed sample rng, step sampler, bad-sample skipping, collation


def test_step_sampler_epochs_resume_ranks_and_micro_batches() -> None:
    sampler = StepSampler(5, 2, seed=3, num_steps=5)
    steps = [s[0] for s in (sampler.step_keys(k) for k in range(5))]  # 5 steps x 2 = 10 = 2 epochs
    flat = [key for batch in steps for key in batch]
    assert [e for e, _ in flat] == [0] * 5 + [1] * 5
    # each epoch is a permutation of all 5 indices, and the two epochs differ (seeded by epoch)
    epoch0 = [i for e, i in flat if e == 0]
    epoch1 = [i for e, i in flat if e == 1]
    assert sorted(epoch0) == sorted(epoch1) == [0, 1, 2, 3, 4]
    assert epoch0 == np.random.default_rng([3, 0]).permutation(5).tolist()
    assert list(sampler) == steps and len(sampler) == 5
    # resuming at step 3 yields exactly the tail of the uninterrupted stream
    assert list(StepSampler(5, 2, seed=3, start_step=3, num_steps=5)) == steps[3:]
    # two ranks with two micro-batches each split the same global batch of 8
    global_batches = StepSampler(7, 8, seed=1, num_steps=2)
    for step in range(2):
        parts = [
            StepSampler(7, 8, seed=1, rank=r, world_size=2, micro_batches=2).step_keys(step)
            for r in range(2)
        ]
        assert [len(m) for p in parts for m in p] == [2, 2, 2, 2]
        assert [k for p in parts for m in p for k in m] == global_batches.step_keys(step)[0]
    with pytest.raises(ValueError, match="divisible"):
        StepSampler(7, 6, seed=0, world_size=4)


class _Base:
    """Tiny panoptic source; index ``bad`` raises ``DatasetError``."""

    def __init__(self, n: int, bad: int | None = None) -> None:
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> PanopticSample:
        if index == self.bad:
            raise DatasetError(f"image id {index}: cannot read 000{index}.jpg")
        image = np.full((4, 4, 3), index, np.uint8)
        return PanopticSample(
            image=image, panoptic=np.zeros((4, 4), np.int32), segments=[], image_id=index
        )


def _noise(sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
    """A 'transform' that records one rng draw in pixel (0, 0, 0)."""
    image = sample.image.copy()
    image[0, 0, 0] = rng.integers(256)
    return PanopticSample(
        image=image, panoptic=sample.panoptic, segments=[], image_id=sample.image_id
    )


def _targets(sample: PanopticSample) -> Targets:
    k = 2
    return Targets(
        heatmaps=[torch.zeros(1, 2, 2)],
        heatmap_weights=[torch.ones(2, 2)],
        center_indices=torch.zeros(k, dtype=torch.int64),
        classes=torch.full((k,), -1, dtype=torch.int64),
        masks=torch.zeros(k, 4, 4, dtype=torch.uint8),
        mask_valid=torch.zeros(k, dtype=torch.bool),
        pixel_weights=torch.ones(4, 4),
        num_instances=0,
    )


def test_train_dataset_keyed_rng_is_reproducible() -> None:
    ds = TrainSampleDataset(_Base(4), transforms=_noise, target_generator=_targets, seed=7)
    a, _, _ = ds[(2, 1)]
    b, _, _ = ds[(2, 1)]
    c, _, _ = ds[(3, 1)]
    assert a.shape == (3, 4, 4) and a.dtype == torch.float32
    assert torch.equal(a, b)  # same (seed, epoch, index) -> same augmentation
    expected = np.random.default_rng([7, 2, 1]).integers(256)
    assert a[0, 0, 0].item() == expected and a[0, 1, 1].item() == 1.0  # pixel value = index
    assert c[0, 0, 0].item() == np.random.default_rng([7, 3, 1]).integers(256)


def test_bad_samples_propagate_or_are_skipped() -> None:
    strict = TrainSampleDataset(
        _Base(4, bad=1), transforms=_noise, target_generator=_targets, seed=0
    )
    with pytest.raises(DatasetError, match="0001.jpg"):
        strict[(0, 1)]
    lenient = TrainSampleDataset(
        _Base(4, bad=1), transforms=_noise, target_generator=_targets, seed=0, skip_bad=True
    )
    image, _, skipped = lenient[(0, 1)]
    assert image[0, 1, 1].item() != 1.0  # a replacement index was used
    assert lenient.num_skipped == 1 and skipped == 1  # the count travels with the sample
    lenient[(1, 1)]
    assert lenient.num_skipped == 2  # counted every time, logged once per index


def test_collate_train_stacks_and_checks_sizes() -> None:
    ds = TrainSampleDataset(_Base(3), transforms=_noise, target_generator=_targets, seed=0)
    images, batch, skipped = collate_train([ds[0], ds[1], ds[2]])
    assert skipped == 0
    assert images.shape == (3, 3, 4, 4) and batch.masks.shape == (3, 2, 4, 4)
    assert batch.num_instances.tolist() == [0, 0, 0]
    big = (torch.zeros(3, 5, 4), ds[0][1])
    with pytest.raises(ValueError, match="share a size"):
        collate_train([ds[0], big])
