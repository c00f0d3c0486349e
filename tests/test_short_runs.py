"""Short runs: the batch-norm momentum warm-up and precise BN give running statistics equal to
the data's (values derived by hand below), the auto rule leaves long schedules alone, and the
training loop recomputes the statistics before saving without changing training itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import SMALL_UNTRAINED_RUN
from torch import nn

from maskconver.config import list_presets, load_config
from maskconver.engine.checkpoint import load_checkpoint
from maskconver.engine.precise_bn import (
    AUTO_BATCHES,
    batch_norms,
    recompute_bn_statistics,
    resolve_batches,
)
from maskconver.engine.step import warm_up_bn_momentum
from maskconver.layers import FrozenBatchNorm2d

MOMENTUM = 0.01
STEPS = 4
EPS = 1e-5


def batch(k: int) -> torch.Tensor:
    """``[2, 1, 1, 1]`` batch with values ``k - 1`` and ``k + 1``: mean ``k``, unbiased var 2."""
    return torch.tensor([k - 1.0, k + 1.0]).view(2, 1, 1, 1)


# batches k = 1..4: the mean of the batch means is (1 + 2 + 3 + 4) / 4 = 2.5, every unbiased
# batch variance is ((-1)^2 + 1^2) / (2 - 1) = 2
DATA_MEAN, DATA_VAR = 2.5, 2.0


def test_momentum_warm_up_gives_the_average_of_the_batches() -> None:
    bn = nn.BatchNorm2d(1, momentum=MOMENTUM).train()
    for step in range(STEPS):
        warm_up_bn_momentum(bn, step, MOMENTUM)
        assert bn.momentum == max(MOMENTUM, 1 / (step + 1))  # 1, 1/2, 1/3, 1/4
        bn(batch(step + 1))
    assert float(bn.running_mean) == pytest.approx(DATA_MEAN, abs=1e-6)
    assert float(bn.running_var) == pytest.approx(DATA_VAR, abs=1e-6)
    # after 1 / momentum steps the configured momentum is back (long schedules unchanged)
    warm_up_bn_momentum(bn, 100, MOMENTUM)
    assert bn.momentum == MOMENTUM
    warm_up_bn_momentum(bn, 5000, MOMENTUM)
    assert bn.momentum == MOMENTUM


def test_without_warm_up_the_statistics_stay_near_their_initial_values() -> None:
    bn = nn.BatchNorm2d(1, momentum=MOMENTUM).train()
    for k in range(1, STEPS + 1):
        bn(batch(k))
    # r_k = (1 - m) r_{k-1} + m x_k from r_0 = 0 (mean) and 1 (var)
    mean = sum(MOMENTUM * (1 - MOMENTUM) ** (STEPS - k) * k for k in range(1, STEPS + 1))
    var = (1 - MOMENTUM) ** STEPS + sum(
        MOMENTUM * (1 - MOMENTUM) ** (STEPS - k) * DATA_VAR for k in range(1, STEPS + 1)
    )
    assert float(bn.running_mean) == pytest.approx(mean, abs=1e-6)  # 0.0990, not 2.5
    assert float(bn.running_var) == pytest.approx(var, abs=1e-6)  # 1.0394, not 2.0
    assert mean < 0.1 * DATA_MEAN


class TwoNorms(nn.Module):
    """``x -> BN1(2x + 1) -> BN2``, plus a frozen norm that must not move."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(2.0)
            self.conv.bias.fill_(1.0)
        self.bn1 = nn.BatchNorm2d(1, momentum=MOMENTUM, eps=EPS)
        self.bn2 = nn.BatchNorm2d(1, momentum=MOMENTUM, eps=EPS)
        self.frozen = FrozenBatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.bn2(self.bn1(self.conv(x))))


def test_precise_bn_sets_the_statistics_of_every_layer_to_the_data_statistics() -> None:
    model, copy = TwoNorms().eval(), TwoNorms().eval()
    frozen_before = model.frozen.running_var.clone()
    batches = [batch(k) for k in range(1, 9)]
    used = recompute_bn_statistics(
        [model, copy], iter(batches), lambda m, b: m(b), num_batches=STEPS
    )
    assert used == STEPS
    for m in (model, copy):
        # BN1 sees 2x + 1 = [2k - 1, 2k + 3]: mean 2k + 1 -> (3 + 5 + 7 + 9) / 4 = 6; the
        # unbiased variance is 2^2 + 2^2 = 8 in every batch
        assert float(m.bn1.running_mean) == pytest.approx(6.0, abs=1e-5)
        assert float(m.bn1.running_var) == pytest.approx(8.0, abs=1e-5)
        # BN2 sees BN1's training-mode output: +-2 / sqrt(4 + eps) (biased variance 4) per batch
        assert float(m.bn2.running_mean) == pytest.approx(0.0, abs=1e-6)
        assert float(m.bn2.running_var) == pytest.approx(2 * 4 / (4 + EPS), abs=1e-6)
        assert not m.training and not m.bn1.training  # modes restored
        assert m.bn1.momentum == MOMENTUM and m.bn2.momentum == MOMENTUM  # momenta restored
    torch.testing.assert_close(model.frozen.running_var, frozen_before)
    assert [type(bn) for bn in batch_norms(model)] == [nn.BatchNorm2d, nn.BatchNorm2d]


def test_precise_bn_without_batches_keeps_the_statistics() -> None:
    model = TwoNorms()
    with torch.no_grad():
        model.bn1.running_mean.fill_(3.0)
        model.bn1.running_var.fill_(5.0)
    assert recompute_bn_statistics([model], iter([]), lambda m, b: m(b), num_batches=4) == 0
    assert recompute_bn_statistics([model], iter([batch(1)]), lambda m, b: m(b), num_batches=0) == 0
    assert (float(model.bn1.running_mean), float(model.bn1.running_var)) == (3.0, 5.0)


def test_auto_rule_is_on_for_short_runs_and_off_for_the_reference_schedules() -> None:
    # 20 time constants of momentum 0.01 = 2000 steps
    assert resolve_batches(None, max_steps=150, momentum=0.01) == AUTO_BATCHES
    assert resolve_batches(None, max_steps=1999, momentum=0.01) == AUTO_BATCHES
    assert resolve_batches(None, max_steps=2000, momentum=0.01) == 0
    assert resolve_batches(None, max_steps=150, momentum=0.1) == AUTO_BATCHES
    assert resolve_batches(None, max_steps=200, momentum=0.1) == 0  # 20 / 0.1 = 200 steps
    assert resolve_batches(0, max_steps=150, momentum=0.01) == 0
    assert resolve_batches(5, max_steps=10**6, momentum=0.01) == 5
    for name in ("mobilenet_mh_256", "mobilenet_mh_640", "resnet50_unet", "mobilenet_v2_256"):
        cfg = load_config(name)
        assert cfg.train.precise_bn_batches is None and cfg.train.bn_momentum_warmup
        got = resolve_batches(None, max_steps=cfg.train.max_steps, momentum=cfg.model.bn_momentum)
        assert got == 0, name
    assert set(list_presets()) >= {"mobilenet_v2_256", "tiny"}


TINY_RUN = [
    "train.max_steps=3",
    "train.ckpt_every=3",
    "data.synthetic_train=4",
    "data.synthetic_val=2",
    "data.synthetic_min_size=48",
    "data.synthetic_max_size=64",
    "train.bn_momentum_warmup=false",
    "eval.metrics=[pq]",
    *SMALL_UNTRAINED_RUN,
]


def _run(tmp_path: Path, name: str, precise: int) -> tuple[dict, object]:
    from maskconver.engine.train import train

    cfg = load_config("tiny", [*TINY_RUN, f"train.precise_bn_batches={precise}"])
    summary = train(cfg, tmp_path / name, progress=False)
    return summary, load_checkpoint(summary["checkpoint"])


def test_training_loop_recomputes_statistics_before_saving_without_changing_training(
    tmp_path: Path,
) -> None:
    plain_summary, plain = _run(tmp_path, "plain", 0)
    precise_summary, precise = _run(tmp_path, "precise", 2)
    assert precise_summary["final_losses"] == plain_summary["final_losses"]
    counters = 0
    for state_name in ("model_state", "ema_state"):
        a, b = getattr(plain, state_name), getattr(precise, state_name)
        assert a is not None and b is not None and a.keys() == b.keys()
        for key in a:
            if key.endswith("num_batches_tracked"):
                # 3 training steps of 1 micro-batch; precise BN: reset, then its 2 batches
                assert int(a[key]) == 3 and int(b[key]) == 2, (state_name, key)
                counters += 1
            elif not key.endswith(("running_mean", "running_var")):
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)  # same training
    assert counters > 0
    moved = [
        k
        for k in plain.model_state
        if k.endswith("running_mean")
        and not torch.allclose(plain.model_state[k], precise.model_state[k])
    ]
    assert moved  # the saved statistics are the recomputed ones
    assert math.isfinite(precise_summary["pq"])
