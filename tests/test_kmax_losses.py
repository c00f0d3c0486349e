"""kMaX-DeepLab's matching and loss terms, and ReMaX's relaxations on kMaX, by hand.

Every expected number is derived here from the definitions in ``meta/kmax/matching.py``,
``meta/kmax/losses.py`` and ``losses/remax.py`` (deeplab2's formulas): tiny cases with 2 queries
and 2x2 masks, then the whole criterion on one hand-built image, then contracts on random
tensors (finite gradients, no panoptic gradient into the semantic heads).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from maskconver.losses import remax
from maskconver.meta.kmax import losses
from maskconver.meta.kmax.criterion import KMaXCriterion
from maskconver.meta.kmax.matching import (
    MaskActivation,
    class_probability_of,
    gt_of_queries,
    hungarian_match,
    mask_probabilities,
    matching_cost,
    pairwise_dice,
)
from maskconver.meta.kmax.outputs import KMaXOutput
from maskconver.meta.kmax.targets import KMaXTargetBatch

ALPHA = 0.75
EPS = 1e-5


def softplus(x: float) -> float:
    """BCE of logit x against target 0 (``softplus(-x)`` is the BCE against target 1)."""
    return math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------------------------
# Matching


def test_hungarian_match_recovers_a_known_permutation() -> None:
    # cost 0 on the permutation q0->g2, q1->g0, q2->g1, 1 elsewhere: the unique optimum
    perm = {0: 2, 1: 0, 2: 1}
    cost = torch.ones(1, 3, 3)
    for q, g in perm.items():
        cost[0, q, g] = 0.0
    queries, gts = hungarian_match(cost, torch.tensor([3]))
    torch.testing.assert_close(gts[0], torch.tensor([0, 1, 2]))  # sorted by ground truth
    torch.testing.assert_close(queries[0], torch.tensor([1, 2, 0]))
    torch.testing.assert_close(
        gt_of_queries(queries, gts, 3), torch.tensor([[2, 0, 1]]), check_dtype=False
    )


def test_hungarian_match_with_fewer_masks_than_queries_and_padding() -> None:
    # 3 queries, 2 real masks + 1 padding slot (its column must be ignored, however cheap)
    cost = torch.tensor(
        [
            [
                [0.9, 0.2, -9.0],
                [0.1, 0.8, -9.0],
                [0.5, 0.5, -9.0],
            ]
        ]
    )
    queries, gts = hungarian_match(cost, torch.tensor([2]))
    # optimum: q1->g0 (0.1) + q0->g1 (0.2) = 0.3 < any pair using q2 (>= 0.6)
    torch.testing.assert_close(gts[0], torch.tensor([0, 1]))
    torch.testing.assert_close(queries[0], torch.tensor([1, 0]))
    torch.testing.assert_close(gt_of_queries(queries, gts, 3), torch.tensor([[1, 0, -1]]))
    # an image with no mask matches nothing
    none_q, none_g = hungarian_match(cost, torch.tensor([0]))
    assert none_q[0].numel() == 0 and none_g[0].numel() == 0


def test_pairwise_dice_and_cost_by_hand() -> None:
    # 2x2 image, bottom-right pixel ignored. Query probabilities p0 = [[.9, .8], [.1, .7]],
    # p1 = [[.1, .2], [.9, .3]]; ground truth g0 = top row, g1 = bottom-left pixel.
    probs = torch.tensor([[[[0.9, 0.8], [0.1, 0.7]], [[0.1, 0.2], [0.9, 0.3]]]])
    gt = torch.tensor([[[[1, 1], [0, 0]], [[0, 0], [1, 0]]]], dtype=torch.bool)
    labelled = torch.tensor([[[True, True], [True, False]]])
    dice = pairwise_dice(probs, gt, labelled)
    # sums over labelled pixels: P0 = 1.8, P1 = 1.2; G0 = 2, G1 = 1
    expected = torch.tensor(
        [
            [
                [2 * 1.7 / (1.8 + 2 + EPS), 2 * 0.1 / (1.8 + 1 + EPS)],
                [2 * 0.3 / (1.2 + 2 + EPS), 2 * 0.9 / (1.2 + 1 + EPS)],
            ]
        ]
    )
    torch.testing.assert_close(dice, expected)
    # classes: g0 is class 1, g1 class 0; C = 2 (+ void)
    logits = torch.tensor([[[0.0, math.log(3.0), 0.0], [math.log(2.0), 0.0, 0.0]]])
    prob = class_probability_of(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(prob, torch.tensor([[[3 / 5, 1 / 5], [1 / 4, 2 / 4]]]))
    torch.testing.assert_close(matching_cost(dice, prob), -(expected * prob))


def test_mask_probabilities_sigmoid_or_softmax_over_queries() -> None:
    logits = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])  # [1, 2, 1, 1]
    torch.testing.assert_close(
        mask_probabilities(logits, "sigmoid"), torch.tensor([[[[0.5]], [[0.75]]]])
    )
    torch.testing.assert_close(
        mask_probabilities(logits, "softmax"), torch.tensor([[[[0.25]], [[0.75]]]])
    )


# ----------------------------------------------------------------------------------------------
# The terms, one at a time


def test_pq_class_term_by_hand() -> None:
    # q0 matched (target class 0, weight 0.6), q1 unmatched (void, weight 0.2); C = 1
    logits = torch.tensor([[[math.log(3.0), 0.0], [0.0, math.log(4.0)]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    weights = torch.tensor([[0.6, 0.2]])
    ce0, ce1 = -math.log(3 / 4), -math.log(4 / 5)
    expected = (ALPHA * 0.6 * ce0 + (1 - ALPHA) * 0.2 * ce1) / 2
    loss = losses.pq_class_loss(logits, target, weights, alpha=ALPHA)
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_class_weights_matched_dice_else_void_ratio_with_floor() -> None:
    probs = torch.tensor([[[[0.5, 0.5]], [[0.0, 0.0]]]])  # q1 predicts nothing
    labelled = torch.tensor([[[True, False]]])
    ratio = losses.void_ratio(probs, labelled)
    torch.testing.assert_close(ratio, torch.tensor([[0.5 / (1.0 + EPS), 0.0]]))
    weights = losses.class_weights(
        torch.tensor([[False, False]]), torch.tensor([[0.9, 0.9]]), ratio
    )
    torch.testing.assert_close(weights, torch.tensor([[0.5 / (1.0 + EPS), 1e-5]]))
    matched = losses.class_weights(torch.tensor([[True, True]]), torch.tensor([[0.9, 0.0]]), ratio)
    torch.testing.assert_close(matched, torch.tensor([[0.9, 1e-5]]))


def test_pq_dice_term_by_hand() -> None:
    # q0 matched to the top row with class prob 0.8; q1 unmatched (no Dice term)
    probs = torch.tensor([[[[0.9, 0.6], [0.2, 0.5]], [[0.1, 0.4], [0.8, 0.5]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    labelled = torch.tensor([[[True, True], [True, False]]])
    loss = losses.pq_dice_loss(
        probs,
        target,
        labelled,
        torch.tensor([[0.8, 0.3]]),
        torch.tensor([[True, False]]),
        alpha=ALPHA,
    )
    # smoothed Dice: (2 * 1.5 + 1) / (1.7 + 2 + 1) on labelled pixels (0.5 ignored)
    dice = (2 * 1.5 + 1) / (1.7 + 2 + 1)
    torch.testing.assert_close(loss, torch.tensor(0.8 * (1 - dice) * ALPHA / 2))


def test_sigmoid_mask_ce_splits_false_positives_and_negatives() -> None:
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, 3.0]]]])  # [1, 2 queries, 1, 2]
    target = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])  # q1 unmatched
    pixels = torch.tensor([[[True, True]]])
    fp, fn, has = losses.sigmoid_mask_ce(logits, target, pixels)
    # the mean over the 2 queries x 2 pixels, split by target
    expected_fn = softplus(-2.0) / 4
    expected_fp = (softplus(-1.0) + softplus(0.5) + softplus(3.0)) / 4
    torch.testing.assert_close(fn, torch.tensor([expected_fn]))
    torch.testing.assert_close(fp, torch.tensor([expected_fp]))
    assert bool(has.all())
    torch.testing.assert_close(
        losses.sigmoid_mask_id_loss(logits, target, pixels), torch.tensor(expected_fn + expected_fp)
    )


def test_instance_discrimination_by_hand() -> None:
    # 3 pixels (1x3), features e0, e0, e1; masks 0, 0, 1; every pixel sampled (points >= 3)
    tau = 0.5
    features = torch.tensor([[[[1.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]]])  # [1, 2, 1, 3]
    ids = torch.tensor([[[0, 0, 1]]])
    loss = losses.instance_discrimination_loss(
        features, ids, 2, points=8, sample_temperature=1.5, similarity_temperature=tau
    )
    a = 1 / tau  # similarity of equal unit features / tau; orthogonal ones: 0
    # pixels 0 and 1: logits (a, a, 0), target (1/2, 1/2, 0) -> log(2 e^a + 1) - a
    same = math.log(2 * math.exp(a) + 1) - a
    # pixel 2: logits (0, 0, a), target (0, 0, 1) -> log(2 + e^a) - a
    alone = math.log(2 + math.exp(a)) - a
    torch.testing.assert_close(loss, torch.tensor((2 * same + alone) / 3))
    # ignored pixels are never in the loss (here: all ignored -> 0, not NaN)
    none = losses.instance_discrimination_loss(
        features,
        torch.full_like(ids, -1),
        2,
        points=8,
        sample_temperature=1.5,
        similarity_temperature=tau,
    )
    assert float(none) == 0.0


def test_sampling_favours_small_masks_and_skips_ignored_pixels() -> None:
    # mask 0 has 7 pixels, mask 1 one pixel (index 7), pixel 8 ignored. With temperature 50 the
    # logit gap 50 * log 7 ~ 97 exceeds any Gumbel noise: one point is always mask 1's pixel.
    ids = torch.tensor([[[0, 0, 0, 0, 0, 0, 0, 1, -1]]])
    for _ in range(5):
        index, valid = losses.sample_pixels(ids, 2, 1, 50.0)
        assert index.tolist() == [[7]] and bool(valid.all())
    index, valid = losses.sample_pixels(ids, 2, 100, 1.5)  # more points than pixels: all 9
    assert sorted(index[0].tolist()) == list(range(9))
    assert int(valid.sum()) == 8 and not bool(valid[0, index[0] == 8].any())
    semantic = torch.tensor([[[3, 3, 3, 3, 3, 3, 3, 4, -1]]])
    torch.testing.assert_close(losses.sampled_semantic(semantic, ids, 2, 0, 2.0), semantic)
    one = losses.sampled_semantic(semantic, ids, 2, 1, 50.0)
    torch.testing.assert_close(one, torch.tensor([[[-1, -1, -1, -1, -1, -1, -1, 4, -1]]]))


# ----------------------------------------------------------------------------------------------
# ReMaX on kMaX


def test_remask_relaxed_logits_are_m_times_one_plus_s() -> None:
    # C = 2, 1x2 image, 1 query with class logits (0, ln 3, void 5) and mask logits (2, -1)
    sem = torch.tensor([[[[0.0, math.log(4.0)]], [[math.log(3.0), 0.0]]]])  # [1, 2, 1, 2]
    cls = torch.tensor([[[0.0, math.log(3.0), 5.0]]])
    m = torch.tensor([[[[2.0, -1.0]]]])
    # sigmoid: s(x0) = (1/2, 3/4), s(x1) = (4/5, 1/2); q = (1/2, 3/4)
    s0, s1 = 0.5 * 0.5 + 0.75 * 0.75, 0.8 * 0.5 + 0.5 * 0.75
    relaxed = losses.remask_logits(m, cls, sem, activation="sigmoid")
    torch.testing.assert_close(relaxed, torch.tensor([[[[2 * (1 + s0), -1 * (1 + s1)]]]]))
    plain = losses.remask_logits(m, cls, sem, activation="sigmoid", identity=False)
    torch.testing.assert_close(plain, torch.tensor([[[[2 * s0, -1 * s1]]]]))
    # softmax: s(x0) = (1/4, 3/4), s(x1) = (4/5, 1/5); q = softmax over 3 columns, void dropped
    z = 1 + 3 + math.exp(5.0)
    q0, q1 = 1 / z, 3 / z
    t0, t1 = 0.25 * q0 + 0.75 * q1, 0.8 * q0 + 0.2 * q1
    relaxed = losses.remask_logits(m, cls, sem, activation="softmax")
    torch.testing.assert_close(relaxed, torch.tensor([[[[2 * (1 + t0), -1 * (1 + t1)]]]]))


def test_reclass_target_by_hand() -> None:
    # 1x4 image: class 0 on pixels 0-1, class 1 on pixel 2, pixel 3 ignored; C = 2
    one_hot = remax.semantic_one_hot(torch.tensor([[[0, 0, 1, -1]]]), 2)
    probs = torch.tensor([[[[0.8, 0.4, 0.5, 0.9]], [[0.0, 0.2, 1.0, 0.0]]]])
    overlap = remax.class_overlap(probs, one_hot)
    y_m = torch.tensor([[[1.2 / (2 + EPS), 0.5 / (1 + EPS)], [0.2 / (2 + EPS), 1.0 / (1 + EPS)]]])
    torch.testing.assert_close(overlap, y_m)
    # q0 matched to class 0, q1 unmatched (void); eta = 0.1
    y = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    soft = losses.reclass_targets(y, overlap, 0.1)
    expected = torch.tensor(
        [[[1.0, 0.1 * y_m[0, 0, 1], 0.0], [0.1 * y_m[0, 1, 0], 0.1 * y_m[0, 1, 1], 1.0]]]
    )
    torch.testing.assert_close(soft, expected)


# ----------------------------------------------------------------------------------------------
# The criterion on one hand-built image: 2 queries, C = 2, a 2x2 mask grid


def _hand_case(aux_blocks: int = 0) -> tuple[KMaXOutput, KMaXTargetBatch]:
    """Ground truth: one mask (class 0) on the top row; the bottom row is ignored.

    Query 0 predicts the top row and class 0 confidently; query 1 the bottom row and void, so
    every matching pairs q0 with the mask.
    """
    class_logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    mask_logits = torch.tensor([[[[2.0, 1.0], [0.0, 0.0]], [[-1.0, 0.0], [3.0, 3.0]]]])
    outputs = KMaXOutput(
        class_logits=class_logits,
        mask_logits=mask_logits,
        pixel_features=F.normalize(torch.ones(1, 2, 2, 2), dim=1),
        aux_class_logits=(class_logits,) * aux_blocks,
        aux_mask_logits=(mask_logits,) * aux_blocks,
        stage_features=(torch.zeros(1, 4, 1, 1),) * aux_blocks,
        backbone_features=(),
    )
    ids = torch.tensor([[[0, 0], [-1, -1]]])
    targets = KMaXTargetBatch(
        masks=torch.stack([ids == 0, ids == 1], dim=1),
        classes=torch.tensor([[0, -1]]),
        semantic=torch.where(ids >= 0, 0, -1),
        mask_ids=ids,
        num_masks=torch.tensor([1]),
    )
    return outputs, targets


def _criterion(
    activation: MaskActivation = "sigmoid", blocks: int = 0, **kwargs: Any
) -> KMaXCriterion:
    """No instance discrimination, no semantic head: the matched terms only."""
    return KMaXCriterion(
        num_classes=2,
        stage_channels=(4,) * blocks,
        backbone_channels=(),
        backbone_strides=(),
        activation=activation,
        instance_weight=0.0,
        semantic_weight=0.0,
        **kwargs,
    )


def _expected_hand_terms(p: list[list[float]], eta: float = 0.0) -> dict[str, float]:
    """pq_class and pq_dice of the hand case from mask probabilities ``p[q] = [tl, tr, bl, br]``."""
    p_cls0 = math.exp(5) / (math.exp(5) + 2)  # q0's probability of class 0 (and q1's of void)
    p_q1_cls0 = 1 / (math.exp(5) + 2)
    top0, top1 = p[0][0] + p[0][1], p[1][0] + p[1][1]
    match_dice = 2 * top0 / (top0 + 2 + EPS)
    void_share = (p[1][2] + p[1][3]) / (sum(p[1]) + EPS)
    ce0 = -math.log(p_cls0)
    ce1 = -math.log(p_cls0) + eta * (top1 / (2 + EPS)) * -math.log(p_q1_cls0)
    pq_class = (ALPHA * match_dice * ce0 + (1 - ALPHA) * void_share * ce1) / 2
    dice = (2 * top0 + 1) / (top0 + 2 + 1)
    pq_dice = p_cls0 * (1 - dice) * ALPHA / 2
    return {"pq_class": pq_class, "pq_dice": pq_dice}


def test_criterion_sigmoid_terms_by_hand() -> None:
    outputs, targets = _hand_case()
    result = _criterion("sigmoid")(outputs, targets)
    p = [[sig(2), sig(1), sig(0), sig(0)], [sig(-1), sig(0), sig(3), sig(3)]]
    expected = _expected_hand_terms(p)
    # mask-ID: on the two labelled pixels, q0's target is 1, q1's 0; the mean over the
    # 2 queries x 2 pixels
    fn = (softplus(-2.0) + softplus(-1.0)) / 4
    fp = (softplus(-1.0) + softplus(0.0)) / 4
    for name, value in {**expected, "mask_id": fn + fp}.items():
        torch.testing.assert_close(result[f"loss_{name}"], torch.tensor(value), msg=name)
    for name, value in {"fn_ce": fn, "fp_ce": fp}.items():  # final and first are the same here
        torch.testing.assert_close(result[f"stat_{name}"], torch.tensor(value), msg=name)
        torch.testing.assert_close(result[f"stat_{name}_first"], torch.tensor(value), msg=name)
    total = 3.0 * (expected["pq_class"] + expected["pq_dice"]) + 0.3 * (fn + fp)
    torch.testing.assert_close(result["loss"], torch.tensor(total))
    assert set(result) == {
        "loss",
        "loss_pq_class",
        "loss_pq_dice",
        "loss_mask_id",
        "stat_fp_ce",
        "stat_fn_ce",
        "stat_fp_ce_first",
        "stat_fn_ce_first",
        "stat_mask_logit_std",
    }


def test_criterion_softmax_switch_changes_mask_id_and_probabilities() -> None:
    outputs, targets = _hand_case()
    result = _criterion("softmax")(outputs, targets)
    # softmax over the 2 queries per pixel: q0's share at tl, tr, bl, br
    share = [sig(2 - (-1)), sig(1 - 0), sig(0 - 3), sig(0 - 3)]
    p = [share, [1 - s for s in share]]
    expected = _expected_hand_terms(p)
    # mask-ID: per labelled pixel -log(q0's share), averaged over the 2 pixels
    mask_id = (-math.log(share[0]) - math.log(share[1])) / 2
    for name, value in {**expected, "mask_id": mask_id}.items():
        torch.testing.assert_close(result[f"loss_{name}"], torch.tensor(value), msg=name)
    # the diagnostics stay the sigmoid cross-entropy of the final prediction
    torch.testing.assert_close(
        result["stat_fn_ce"], torch.tensor((softplus(-2.0) + softplus(-1.0)) / 4)
    )


def test_criterion_reclass_softens_the_unmatched_query_target() -> None:
    outputs, targets = _hand_case()
    result = _criterion("sigmoid", reclass_eta=0.1)(outputs, targets)
    p = [[sig(2), sig(1), sig(0), sig(0)], [sig(-1), sig(0), sig(3), sig(3)]]
    # q0 is matched to class 0: its target stays one-hot (y_hat_c* = 1, no other class present);
    # q1 (void) also gets eta * y_m(q1, class 0) on class 0
    expected = _expected_hand_terms(p, eta=0.1)
    torch.testing.assert_close(result["loss_pq_class"], torch.tensor(expected["pq_class"]))


def test_an_image_without_masks_trains_only_the_void_class() -> None:
    outputs, targets = _hand_case()
    empty = KMaXTargetBatch(
        masks=torch.zeros_like(targets.masks),
        classes=torch.full_like(targets.classes, -1),
        semantic=torch.full_like(targets.semantic, -1),
        mask_ids=torch.full_like(targets.mask_ids, -1),
        num_masks=torch.tensor([0]),
    )
    result = _criterion("sigmoid", reclass_eta=0.1)(outputs, empty)
    for name in ("loss_pq_dice", "loss_mask_id", "stat_fp_ce", "stat_fn_ce"):
        assert float(result[name]) == 0.0, name
    # both queries unmatched: (1 - alpha) * void ratio (every pixel ignored) * CE(void), / N
    expected = 0.0
    for q, logits in enumerate(([5.0, 0.0, 0.0], [0.0, 0.0, 5.0])):
        probs = torch.tensor(outputs.mask_logits[0, q].flatten().tolist()).sigmoid()
        share = float(probs.sum() / (probs.sum() + EPS))
        ce_void = -math.log(math.exp(logits[2]) / sum(math.exp(v) for v in logits))
        expected += (1 - ALPHA) * share * ce_void / 2
    torch.testing.assert_close(result["loss_pq_class"], torch.tensor(expected))


def test_deep_supervision_sums_over_predictions() -> None:
    single = _criterion()(*_hand_case(0))
    outputs, targets = _hand_case(2)  # two auxiliary predictions equal to the final one
    triple = _criterion(blocks=2)(outputs, targets)
    for name in ("loss_pq_class", "loss_pq_dice", "loss_mask_id", "loss"):
        torch.testing.assert_close(triple[name], 3 * single[name], msg=name)
    torch.testing.assert_close(triple["stat_fp_ce"], single["stat_fp_ce"])  # final prediction only


# ----------------------------------------------------------------------------------------------
# Contracts on random tensors

B, N, C, M, H4 = 2, 5, 3, 4, 8


def _random_case(blocks: int = 2) -> tuple[KMaXOutput, KMaXTargetBatch]:
    torch.manual_seed(0)
    outputs = KMaXOutput(
        class_logits=torch.randn(B, N, C + 1, requires_grad=True),
        mask_logits=torch.randn(B, N, H4, H4, requires_grad=True),
        pixel_features=F.normalize(torch.randn(B, 6, H4, H4), dim=1).requires_grad_(),
        aux_class_logits=tuple(torch.randn(B, N, C + 1, requires_grad=True) for _ in range(blocks)),
        aux_mask_logits=tuple(torch.randn(B, N, H4, H4, requires_grad=True) for _ in range(blocks)),
        stage_features=tuple(
            torch.randn(B, 6, 2**i, 2**i, requires_grad=True) for i in range(blocks)
        ),
        backbone_features=(
            torch.randn(B, 4, H4, H4, requires_grad=True),
            torch.randn(B, 6, H4 // 2, H4 // 2, requires_grad=True),
            torch.randn(B, 8, H4 // 8, H4 // 8, requires_grad=True),
        ),
    )
    ids = torch.randint(-1, 3, (B, H4, H4))
    classes = torch.tensor([[0, 1, 2, -1], [2, 2, 0, -1]])
    semantic = torch.where(
        ids >= 0, classes.gather(1, ids.clamp(min=0).flatten(1)).view_as(ids), -1
    )
    targets = KMaXTargetBatch(
        masks=ids[:, None] == torch.arange(M)[None, :, None, None],
        classes=classes,
        semantic=semantic,
        mask_ids=ids,
        num_masks=torch.tensor([3, 3]),
    )
    return outputs, targets


def _full_criterion(activation: MaskActivation, **kwargs: Any) -> KMaXCriterion:
    return KMaXCriterion(
        num_classes=C,
        stage_channels=(6, 6),
        backbone_channels=(4, 6, 8),
        backbone_strides=(4, 8, 32),
        activation=activation,
        semantic_channels=8,
        instance_points=32,
        semantic_points=32,
        **kwargs,
    )


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_criterion_runs_on_random_outputs_with_finite_gradients(activation: MaskActivation) -> None:
    outputs, targets = _random_case()
    criterion = _full_criterion(activation, remask_stages=2, reclass_eta=0.1)
    result = criterion(outputs, targets)
    assert set(result) == {
        "loss",
        "loss_pq_class",
        "loss_pq_dice",
        "loss_mask_id",
        "loss_instance",
        "loss_semantic",
        "loss_remask_semantic",
        "stat_fp_ce",
        "stat_fn_ce",
        "stat_fp_ce_first",
        "stat_fn_ce_first",
        "stat_mask_logit_std",
    }
    assert all(v.dim() == 0 and bool(torch.isfinite(v)) for v in result.values())
    assert not result["stat_fp_ce"].requires_grad and not result["stat_fn_ce"].requires_grad
    result["loss"].backward()
    tensors = [outputs.class_logits, outputs.mask_logits, outputs.pixel_features]
    tensors += [*outputs.aux_mask_logits, *outputs.stage_features, *outputs.backbone_features]
    for tensor in tensors:
        assert tensor.grad is not None and bool(torch.isfinite(tensor.grad).all())
    for name, param in criterion.named_parameters():
        assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name


def test_panoptic_losses_send_no_gradient_into_the_semantic_heads() -> None:
    outputs, targets = _random_case()
    criterion = _full_criterion("sigmoid", remask_stages=2, reclass_eta=0.1)
    result = criterion(outputs, targets)
    heads = list(criterion.stage_heads.parameters())
    panoptic = result["loss_pq_class"] + result["loss_pq_dice"] + result["loss_mask_id"]
    grads = torch.autograd.grad(panoptic, heads, allow_unused=True, retain_graph=True)
    assert all(g is None or not bool(g.any()) for g in grads)
    # ... while their own semantic loss trains them, and the relaxation changes the terms
    own = torch.autograd.grad(result["loss_remask_semantic"], heads, allow_unused=True)
    assert any(g is not None and bool(g.any()) for g in own)
    plain = _full_criterion("sigmoid", reclass_eta=0.1)(*_random_case())
    assert not torch.allclose(plain["loss_mask_id"], result["loss_mask_id"])


def test_heads_are_built_only_when_used() -> None:
    off = _full_criterion("sigmoid", remask_stages=0, semantic_weight=0.0)
    assert off.semantic_head is None and len(off.stage_heads) == 0
    assert sum(p.numel() for p in off.parameters()) == 0
    on = _full_criterion("sigmoid", remask_stages=1)
    assert on.semantic_head is not None and len(on.stage_heads) == 1
    outputs, targets = _random_case()
    assert "loss_remask_semantic" not in off(outputs, targets)
    with pytest.raises(ValueError, match="remask_stages"):
        _full_criterion("sigmoid", remask_stages=3)
