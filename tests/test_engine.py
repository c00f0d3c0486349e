"""EMA, learning-rate schedule and weight-decay groups: hand-derived expectations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from maskconver.config import TrainConfig
from maskconver.engine.ema import ModelEma
from maskconver.engine.optim import build_optimizer, lr_at, param_groups


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
    assert math.isclose(lr_at(25, base_lr=2.0, warmup_steps=0, total_steps=100), 1 + math.cos(math.pi / 4))
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
    opt = build_optimizer(TrainConfig(optimizer="sgd", lr=0.1, weight_decay=0.01, momentum=0.9), net)
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
