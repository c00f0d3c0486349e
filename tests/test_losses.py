"""Analytic specifications of the losses (reference 3.1-3.5), values derived in the tests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskconver.data.types import PanopticSample, SegmentInfo
from maskconver.meta.maskconver.losses import (
    MaskConverCriterion,
    center_focal_loss,
    mask_bce_loss,
    mask_dice_loss,
)
from maskconver.meta.maskconver.outputs import MaskConverOutput
from maskconver.meta.maskconver.targets import TargetBatch, TargetGenerator


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def one_pixel(value: float) -> torch.Tensor:
    return torch.full((1, 1, 1, 1), value)


def focal_one(logit: torch.Tensor | float, target: float, n: int, **kwargs: float) -> torch.Tensor:
    """Focal loss of a single-image, single-class, single-pixel heatmap with weight 1."""
    x = logit if isinstance(logit, torch.Tensor) else one_pixel(logit)
    ones = torch.ones(1, 1, 1)
    return center_focal_loss([x], [one_pixel(target)], [ones], torch.tensor([n]), **kwargs)


# ----------------------------------------------------------------------------- focal


def test_focal_positive_pixel() -> None:
    # t = 1, x = 0.5: p = sigmoid(0.5) = 0.6225; loss = -(1-p)^2 log p = 0.0676; / (n + 1) = 2
    p = sigmoid(0.5)
    expected = -((1 - p) ** 2) * math.log(p) / 2
    loss = focal_one(0.5, 1.0, 1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(0.03379, abs=1e-5)


def test_focal_negative_pixel_penalty_reduced() -> None:
    # t = 0.5, x = -1: p = 0.2689; loss = -(1-t)^4 p^2 log(1-p) = 0.0625 * 0.0723 * 0.3133
    p = sigmoid(-1.0)
    expected = -((1 - 0.5) ** 4) * p**2 * math.log(1 - p)  # n = 0 -> / 1
    loss = focal_one(-1.0, 0.5, 0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(1.4164e-3, rel=1e-3)
    # with alpha = 1, beta = 2 the exponents change accordingly
    loss = focal_one(-1.0, 0.5, 0, alpha=1.0, beta=2.0)
    assert loss.item() == pytest.approx(-(0.5**2) * p * math.log(1 - p), rel=1e-6)


def test_focal_clips_probability() -> None:
    # p is clipped to [1e-4, 1 - 1e-4]: a confident wrong answer costs (1-1e-4)^2 * -log(1e-4)
    worst = (1 - 1e-4) ** 2 * -math.log(1e-4)  # ~9.2085
    for logit, target in ((30.0, 0.0), (-30.0, 1.0)):
        x = one_pixel(logit).requires_grad_()
        loss = focal_one(x, target, 0)
        assert loss.item() == pytest.approx(worst, rel=1e-5)
        loss.backward()
        assert x.grad is not None and x.grad.item() == 0.0  # like the clip: no gradient beyond it
    # a confident right answer costs about (1e-4)^2 * -log(1 - 1e-4) ~ 1e-12
    loss = focal_one(30.0, 1.0, 0)
    assert loss.item() == pytest.approx(1e-8 * -math.log(1 - 1e-4), rel=1e-3)


def test_focal_weights_and_per_image_normalisation() -> None:
    # Two images, two levels ([1, 2, 1, 2] and [1, 2, 1, 1]) with logits 0 (p = 1/2):
    #   positive pixel: (1/2)^2 * log 2 = log2 / 4;  target-0 negative: (1/2)^2 * log 2 = log2 / 4
    #   target-0.5 negative: (1/2)^4 * log2 / 4 = log2 / 64
    # image 0: level 0 = [pos, neg(t=0)] on class 0, zeros on class 1 (2 more log2/4 terms);
    #          level 1 = one t=0.5 pixel on class 0 and a t=0 pixel on class 1
    # image 1: same targets but weight 0 on level-0 pixel 1 (both classes)
    log2 = math.log(2.0)
    t0 = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
    t1 = torch.tensor([[[[0.5]], [[0.0]]]])  # [1, 2, 1, 1]
    targets = [t0.repeat(2, 1, 1, 1), t1.repeat(2, 1, 1, 1)]
    logits = [torch.zeros(2, 2, 1, 2), torch.zeros(2, 2, 1, 1)]
    weights = [torch.tensor([[[1.0, 1.0]], [[1.0, 0.0]]]), torch.ones(2, 1, 1)]
    num_instances = torch.tensor([3, 0])
    image0 = (4 * log2 / 4 + log2 / 64 + log2 / 4) / (3 + 1)
    image1 = (2 * log2 / 4 + log2 / 64 + log2 / 4) / (0 + 1)
    loss = center_focal_loss(logits, targets, weights, num_instances)
    assert loss.item() == pytest.approx((image0 + image1) / 2, rel=1e-6)
    # pooled normalisation (sum / (total instances + 1)) would differ
    assert loss.item() != pytest.approx((image0 * 4 + image1) / 4, rel=1e-3)


def test_focal_rejects_mismatched_shapes() -> None:
    x = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="level 0"):
        center_focal_loss([x], [torch.zeros(1, 2, 3, 4)], [torch.ones(1, 3, 3)], torch.zeros(1))
    with pytest.raises(ValueError, match="weights"):
        center_focal_loss([x], [torch.zeros(1, 2, 3, 3)], [torch.ones(1, 3, 4)], torch.zeros(1))
    with pytest.raises(ValueError, match="num_instances"):
        center_focal_loss([x], [torch.zeros(1, 2, 3, 3)], [torch.ones(1, 3, 3)], torch.zeros(2))
    with pytest.raises(ValueError, match="levels"):
        center_focal_loss([x], [], [], torch.zeros(1))


# ----------------------------------------------------------------------------- BCE


def bce(x: float, t: float) -> float:
    """-(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))."""
    return -(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))


def test_bce_known_values_and_weights() -> None:
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, 3.0]]]])  # [1, K=2, 1, 2]
    targets = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    # all slots valid, all pixels weighted: sum of 4 BCE terms / (4 + 1)
    expected = (bce(2, 1) + bce(-1, 0) + bce(0.5, 0) + bce(3, 1)) / 5
    loss = mask_bce_loss(logits, targets, torch.ones(1, 2), torch.ones(1, 1, 2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # slot 1 invalid and pixel 1 ignored: only slot 0 pixel 0 remains: log(1 + e^-2) / (1 + 1)
    slot_valid, pixel_weights = torch.tensor([[1.0, 0.0]]), torch.tensor([[[1.0, 0.0]]])
    loss = mask_bce_loss(logits, targets, slot_valid, pixel_weights)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)) / 2, rel=1e-6)


def test_bce_is_per_image_not_pooled() -> None:
    # image 0: one weighted pixel with BCE a; image 1: three weighted pixels with BCE b each
    logits = torch.tensor([[[[1.0, 1.0, 1.0]]], [[[-2.0, -2.0, -2.0]]]])  # [2, 1, 1, 3]
    targets = torch.tensor([[[[1.0, 1.0, 1.0]]], [[[1.0, 1.0, 1.0]]]])
    weights = torch.tensor([[[1.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]])
    a, b = bce(1, 1), bce(-2, 1)
    per_image = (a / (1 + 1) + 3 * b / (3 + 1)) / 2
    pooled = (a + 3 * b) / (4 + 1)
    loss = mask_bce_loss(logits, targets, torch.ones(2, 1), weights)
    assert loss.item() == pytest.approx(per_image, rel=1e-6)
    assert loss.item() != pytest.approx(pooled, rel=1e-2)


# ----------------------------------------------------------------------------- Dice


def test_dice_identical_masks_is_zero() -> None:
    gt = torch.zeros(1, 2, 4, 4)
    gt[0, 0, :2] = 1
    gt[0, 1, 2:, 1:] = 1
    logits = gt * 40 - 20  # sigmoid = 1 - 2e-9 on the mask, 2e-9 off it: d = 1 - O(1e-8)
    for mode in ("adaptive", "plain"):
        loss = mask_dice_loss(logits, gt, torch.ones(1, 2), torch.ones(1, 4, 4), mode=mode)
        assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_dice_known_score_adaptive_and_plain() -> None:
    # one slot, 4 pixels, logits 0 -> P = 1/2 everywhere; G = [1, 0, 0, 0]
    # d = 2 * (1/2) / (2 + 1) = 1/3; adaptive 1 - d e^(1-d) = 1 - e^(2/3)/3 ~ 0.3508; plain 2/3
    logits = torch.zeros(1, 1, 2, 2)
    gt = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    d = 1 / 3
    adaptive = mask_dice_loss(logits, gt, torch.ones(1, 1), torch.ones(1, 2, 2))
    assert adaptive.item() == pytest.approx(1 - d * math.exp(1 - d), rel=1e-6)
    assert adaptive.item() == pytest.approx(0.35076, abs=1e-5)
    plain = mask_dice_loss(logits, gt, torch.ones(1, 1), torch.ones(1, 2, 2), mode="plain")
    assert plain.item() == pytest.approx(2 / 3, rel=1e-6)


def test_dice_is_one_global_score_per_image() -> None:
    # slot 0: P = 1/2 on 4 px, G one pixel (as above); slot 1: P = 1/2 on 4 px, G all 4 px
    # global: 2 * (0.5 + 2) / ((2 + 1) + (2 + 4)) = 5/9, not the mean of per-slot d (1/3, 2/3)
    logits = torch.zeros(1, 2, 2, 2)
    gt = torch.zeros(1, 2, 2, 2)
    gt[0, 0, 0, 0] = 1
    gt[0, 1] = 1
    loss = mask_dice_loss(logits, gt, torch.ones(1, 2), torch.ones(1, 2, 2), mode="plain")
    assert loss.item() == pytest.approx(1 - 5 / 9, rel=1e-6)


def test_dice_empty_image_contributes_one() -> None:
    # no valid slot: P = G = 0 -> d = 0 / eps = 0 -> loss 1 in both modes
    logits = torch.randn(1, 3, 2, 2)
    gt = torch.ones(1, 3, 2, 2)
    for mode in ("adaptive", "plain"):
        loss = mask_dice_loss(logits, gt, torch.zeros(1, 3), torch.ones(1, 2, 2), mode=mode)
        assert loss.item() == 1.0
    with pytest.raises(ValueError, match="mode"):
        bad_mode: Any = "soft"
        mask_dice_loss(logits, gt, torch.zeros(1, 3), torch.ones(1, 2, 2), mode=bad_mode)


def test_dice_is_per_image_not_pooled() -> None:
    # image 0: P = 1/2 on 4 px, G = 1 px -> d0 = 1/3; image 1: perfect masks on 16 px -> d1 ~ 1
    logits = torch.full((2, 1, 4, 4), -20.0)
    gt = torch.zeros(2, 1, 4, 4)
    logits[0, 0, :2, :2] = 0.0
    gt[0, 0, 0, 0] = 1.0
    weights = torch.zeros(2, 4, 4)
    weights[0, :2, :2] = 1.0
    weights[1] = 1.0
    logits[1, 0] = 20.0
    gt[1, 0] = 1.0
    d0 = 1 / 3
    per_image = ((1 - d0 * math.exp(1 - d0)) + 0.0) / 2  # ~0.1754
    # pooled over the batch: d = 2 (0.5 + 16) / (3 + 32) = 33/35 -> 1 - d e^(1-d) ~ 0.0002
    d_pooled = 33 / 35
    pooled = 1 - d_pooled * math.exp(1 - d_pooled)
    loss = mask_dice_loss(logits, gt, torch.ones(2, 1), weights)
    assert loss.item() == pytest.approx(per_image, rel=1e-5)
    assert abs(loss.item() - pooled) > 0.1


def test_mask_losses_reject_bad_shapes() -> None:
    x = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="slot_valid"):
        mask_bce_loss(x, x, torch.ones(1, 3), torch.ones(1, 3, 3))
    with pytest.raises(ValueError, match="pixel_weights"):
        mask_dice_loss(x, x, torch.ones(1, 2), torch.ones(1, 3, 4))
    with pytest.raises(ValueError, match="targets"):
        mask_bce_loss(x, torch.zeros(1, 2, 3, 4), torch.ones(1, 2), torch.ones(1, 3, 3))


# ----------------------------------------------------------------------------- criterion


def small_batch(seed: int = 0) -> TargetBatch:
    """Two 16x16 images from the target generator (stride 4 heatmaps, K = 4)."""
    gen = TargetGenerator(
        num_classes=3,
        category_to_class={1: 0, 2: 1, 10: 2},
        thing_category_ids={1, 2},
        center_strides=[4],
        max_instances=4,
        stuff_dilation=3,
        min_stuff_area=1,
    )
    items = []
    for shift in (0, 5):
        panoptic = np.zeros((16, 16), np.int32)
        panoptic[1 + shift : 6 + shift, 2:7] = 1
        panoptic[8:12, 9 + shift // 2 : 14] = 2
        panoptic[13:16, :] = 3
        panoptic[:, 15] = -1
        segments = [SegmentInfo(1, 1), SegmentInfo(2, 2), SegmentInfo(3, 10)]
        sample = PanopticSample(np.zeros((16, 16, 3), np.uint8), panoptic, segments, seed)
        items.append(gen(sample))
    return TargetBatch.stack(items)


def make_outputs(batch: TargetBatch, mask_size: int = 8, seed: int = 0) -> MaskConverOutput:
    g = torch.Generator().manual_seed(seed)
    center_logits = tuple(
        torch.randn(h.shape, generator=g).requires_grad_() for h in batch.heatmaps
    )
    b, k = batch.classes.shape
    mask_logits = torch.randn(b, k, mask_size, mask_size, generator=g).requires_grad_()
    return MaskConverOutput(
        center_logits=center_logits,
        mask_logits=mask_logits,
        scores=torch.zeros(b, k),
        classes=batch.classes.clamp(min=0),
        center_indices=batch.center_indices,
    )


def test_criterion_combines_weighted_terms_and_upsamples() -> None:
    batch = small_batch()
    outputs = make_outputs(batch)
    criterion = MaskConverCriterion(center_weight=2.0, bce_weight=3.0, dice_weight=0.5)
    losses = criterion(outputs, batch)
    assert set(losses) == {"loss", "loss_center", "loss_bce", "loss_dice"}
    # the terms equal the functional losses on bilinearly upsampled (align_corners=False) logits
    up = F.interpolate(outputs.mask_logits, size=(16, 16), mode="bilinear", align_corners=False)
    valid = batch.mask_valid.float()
    gt = batch.masks.float()
    center = center_focal_loss(
        list(outputs.center_logits), batch.heatmaps, batch.heatmap_weights, batch.num_instances
    )
    bce_value = mask_bce_loss(up, gt, valid, batch.pixel_weights)
    dice_value = mask_dice_loss(up, gt, valid, batch.pixel_weights)
    torch.testing.assert_close(losses["loss_center"], center)
    torch.testing.assert_close(losses["loss_bce"], bce_value)
    torch.testing.assert_close(losses["loss_dice"], dice_value)
    torch.testing.assert_close(losses["loss"], 2.0 * center + 3.0 * bce_value + 0.5 * dice_value)
    # default weights 1 / 5 / 5
    default = MaskConverCriterion()(outputs, batch)
    torch.testing.assert_close(default["loss"], center + 5 * bce_value + 5 * dice_value)
    # plain Dice is 1 - d, always >= the adaptive 1 - d e^(1-d) (since e^(1-d) >= 1)
    plain = MaskConverCriterion(dice_mode="plain")(outputs, batch)
    assert plain["loss_dice"] >= losses["loss_dice"]


def test_criterion_gradients_finite_even_for_extreme_logits() -> None:
    batch = small_batch()
    outputs = make_outputs(batch)
    extreme = MaskConverOutput(
        center_logits=tuple((x * 1e3).detach().requires_grad_() for x in outputs.center_logits),
        mask_logits=(outputs.mask_logits * 1e3).detach().requires_grad_(),
        scores=outputs.scores,
        classes=outputs.classes,
        center_indices=outputs.center_indices,
    )
    for out in (outputs, extreme):
        losses = MaskConverCriterion()(out, batch)
        assert all(torch.isfinite(v) for v in losses.values())
        losses["loss"].backward()
        assert out.mask_logits.grad is not None and torch.isfinite(out.mask_logits.grad).all()
        assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in out.center_logits)
    # padded slots get no mask gradient
    padded = ~batch.mask_valid
    assert padded.any() and outputs.mask_logits.grad[padded].abs().sum() == 0  # type: ignore[index]


def test_criterion_float32_under_autocast() -> None:
    batch = small_batch()
    outputs = make_outputs(batch)
    half = MaskConverOutput(
        center_logits=tuple(x.detach().bfloat16() for x in outputs.center_logits),
        mask_logits=outputs.mask_logits.detach().bfloat16(),
        scores=outputs.scores,
        classes=outputs.classes,
        center_indices=outputs.center_indices,
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = MaskConverCriterion()(half, batch)
    assert all(v.dtype == torch.float32 for v in losses.values())
    reference = MaskConverCriterion()(outputs, batch)
    torch.testing.assert_close(losses["loss"], reference["loss"].detach(), rtol=2e-2, atol=0)


def test_criterion_rejects_mismatched_outputs() -> None:
    batch = small_batch()
    outputs = make_outputs(batch)
    with pytest.raises(ValueError, match="center levels"):
        MaskConverCriterion()(outputs._replace(center_logits=outputs.center_logits * 2), batch)
    with pytest.raises(ValueError, match="mask_logits"):
        MaskConverCriterion()(outputs._replace(mask_logits=outputs.mask_logits[:, :2]), batch)
    with pytest.raises(ValueError, match="dice_mode"):
        MaskConverCriterion(dice_mode="soft")  # type: ignore[arg-type]
