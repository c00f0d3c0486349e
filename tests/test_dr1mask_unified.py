"""The unified panoptic layer: mean-embedding columns, targets and loss, argmax inference.

Everything is a tiny hand-built example whose expected value is computed in the test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskconver.meta.dr1mask.criterion import DR1MaskCriterion
from maskconver.meta.dr1mask.model import DR1MaskOutput
from maskconver.meta.dr1mask.postprocess import DR1MaskPostProcessor
from maskconver.meta.dr1mask.targets import DR1MaskTargetBatch
from maskconver.meta.dr1mask.unified import (
    MASKED_LOGIT,
    UnifiedPanopticLayer,
    masked_unified_logits,
    mean_embeddings,
    unified_loss,
)


def test_mean_embedding_column_per_instance() -> None:
    embeddings = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [5.0, -1.0], [7.0, 7.0], [9.0, 9.0]]])
    gt_index = torch.tensor([[0, 0, 2, -1, 0]])  # slot 0: rows 0, 1, 4; slot 2: row 2
    columns, counts = mean_embeddings(embeddings, gt_index, 3)
    assert counts.tolist() == [[3.0, 0.0, 1.0]]
    torch.testing.assert_close(columns, torch.tensor([[[13 / 3, 17 / 3], [0.0, 0.0], [5.0, -1.0]]]))


def test_instance_logits_are_the_columns_times_the_basis() -> None:
    basis = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # [1, D=2, 1, 2]
    columns = torch.tensor([[[3.0, 1.0], [-1.0, 0.5]]])  # [1, N=2, D=2]
    logits = UnifiedPanopticLayer.instance_logits(columns, basis)
    assert logits.tolist() == [[[[3.0, 2.0]], [[-1.0, 1.0]]]]


def test_unified_loss_by_hand_with_masked_columns_and_ignore() -> None:
    # C = 2 static columns (class 1 is a thing: masked), N = 2 slots (slot 1 empty: masked)
    stuff = torch.tensor([[[[1.0, 0.0, 2.0]], [[5.0, 5.0, 5.0]]]])  # [1, 2, 1, 3]
    instance = torch.tensor([[[[0.0, 3.0, 1.0]], [[9.0, 9.0, 9.0]]]])
    logits = masked_unified_logits(
        stuff, torch.tensor([True, False]), instance, torch.tensor([[True, False]])
    )
    assert logits[0, 1].eq(MASKED_LOGIT).all() and logits[0, 3].eq(MASKED_LOGIT).all()
    target = torch.tensor([[[0, 2, -1]]])  # stuff class 0 | instance slot 0 | ignored
    loss = unified_loss(logits, target, basis_stride=4, target_stride=4)
    # pixel 0: logits (1, 0) over the valid channels (static 0, slot 0), target static 0
    # pixel 1: logits (0, 3), target slot 0
    pixel0 = -math.log(math.exp(1) / (math.exp(1) + math.exp(0)))
    pixel1 = -math.log(math.exp(3) / (math.exp(0) + math.exp(3)))
    assert loss.item() == pytest.approx((pixel0 + pixel1) / 2, rel=1e-6)
    nothing = unified_loss(logits, torch.full_like(target, -1), basis_stride=4, target_stride=4)
    assert nothing.item() == 0.0


def test_unified_loss_upsamples_to_the_target_stride() -> None:
    # logits at stride 4 [1, 2, 1, 2]; target at stride 2 is 1 x 3 (a 6 px wide input):
    # aligned x2 puts logit pixel j on target pixel 2j, pixel 1 is the midpoint
    logits = torch.tensor([[[[0.0, 2.0]], [[0.0, 0.0]]]])
    target = torch.tensor([[[0, 0, 1]]])
    loss = unified_loss(logits, target, basis_stride=4, target_stride=2)
    expected = [
        -math.log(1 / (1 + 1)),  # (0, 0) -> channel 0
        -math.log(math.exp(1) / (math.exp(1) + 1)),  # midpoint (1, 0) -> channel 0
        -math.log(1 / (math.exp(2) + 1)),  # (2, 0) -> channel 1
    ]
    assert loss.item() == pytest.approx(sum(expected) / 3, rel=1e-6)


def _batch_for_criterion() -> tuple[DR1MaskOutput, DR1MaskTargetBatch]:
    """One image, one level of 2 locations, C = 2 (class 0 thing, 1 stuff), K = 2 slots."""
    cls_logits = torch.zeros(1, 2, 1, 2)
    distances = torch.ones(1, 4, 1, 2)
    centerness = torch.zeros(1, 1, 1, 2)
    embeddings = torch.tensor([[[[2.0, 4.0]], [[0.0, 1.0]]]])  # e_0 = (2, 0), e_1 = (4, 1)
    basis = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # F at 1 x 2
    stuff_logits = torch.tensor([[[[7.0, 7.0]], [[0.5, -0.5]]]])
    outputs = DR1MaskOutput(
        cls_logits=(cls_logits,),
        distances=(distances,),
        centerness=(centerness,),
        embeddings=(embeddings,),
        basis=basis,
        stuff_logits=stuff_logits,
    )
    targets = DR1MaskTargetBatch(
        labels=torch.tensor([[0, 0]]),
        gt_index=torch.tensor([[0, 0]]),  # both locations belong to instance slot 0
        distances=torch.ones(1, 2, 4),
        centerness=torch.ones(1, 2),
        boxes=torch.tensor([[[0.0, 0.0, 8.0, 4.0], [0.0, 0.0, 0.0, 0.0]]]),
        classes=torch.tensor([[0, -1]]),
        instance_valid=torch.tensor([[True, False]]),
        mask_crops=torch.zeros(1, 2, 2, 2, dtype=torch.uint8),
        panoptic=torch.tensor([[[1, 2]]]),  # pixel 0 stuff class 1, pixel 1 slot 0 (= 2 + 0)
        static_valid=torch.tensor([[False, True]]),
        num_instances=torch.tensor([1]),
    )
    return outputs, targets


def test_criterion_unified_term_uses_the_mean_embedding_column() -> None:
    outputs, targets = _batch_for_criterion()
    criterion = DR1MaskCriterion(num_classes=2, mask_size=2, basis_stride=4, target_stride=4)
    losses = criterion(outputs, targets)
    # column of slot 0 = mean(e_0, e_1) = (3, 0.5); its logits on F: (3, 0.5)
    # valid channels: static 1 (0.5, -0.5) and slot 0 (3, 0.5); static 0 (a thing) is masked
    pixel0 = -math.log(math.exp(0.5) / (math.exp(0.5) + math.exp(3.0)))  # target static 1
    pixel1 = -math.log(math.exp(0.5) / (math.exp(-0.5) + math.exp(0.5)))  # target slot 0
    assert losses["loss_unified"].item() == pytest.approx((pixel0 + pixel1) / 2, rel=1e-5)
    # identical predicted and target boxes: no box loss; the other terms are finite
    assert losses["loss_box"].item() == pytest.approx(0.0, abs=1e-6)
    assert all(math.isfinite(v.item()) for v in losses.values())


def test_criterion_focal_and_centerness_terms_by_hand() -> None:
    outputs, targets = _batch_for_criterion()
    criterion = DR1MaskCriterion(num_classes=2, mask_size=2)
    losses = criterion(outputs, targets)
    # logits 0 everywhere: p = 0.5; 2 positives (class 0) and 2 negatives (class 1)
    # positive term 0.25 * log(2) * 0.5^2, negative term 0.75 * log(2) * 0.5^2; / 2 positives
    focal = (2 * 0.25 + 2 * 0.75) * math.log(2) * 0.25 / 2
    assert losses["loss_cls"].item() == pytest.approx(focal, rel=1e-6)
    # centerness logit 0 vs target 1: BCE log(2) per positive, averaged
    assert losses["loss_centerness"].item() == pytest.approx(math.log(2), rel=1e-6)


def _post(min_area: int = 0, box_crop: bool = False) -> DR1MaskPostProcessor:
    # class 0: thing (id 10), class 1: stuff (id 20), class 2: stuff (id 30)
    return DR1MaskPostProcessor(
        class_to_category=[10, 20, 30],
        is_thing_class=[True, False, False],
        object_threshold=0.3,
        min_area=min_area,
        basis_stride=1,
        box_crop=box_crop,
    )


def test_argmax_inference_on_a_hand_built_map() -> None:
    # unified logits [C + K = 3 + 2, 3, 3] at stride 1 on a 3 x 3 canvas (read exactly)
    logits = torch.full((5, 3, 3), -5.0)
    logits[0] = 100.0  # the static column of thing class 0 is masked: never wins
    logits[1, 0, :] = 2.0  # stuff 20 on the top row
    logits[2, 1:, 2] = 2.0  # stuff 30 on the right column below it
    logits[3, 1:, :2] = 3.0  # detection 0 (score 0.9) bottom-left 2 x 2
    logits[4] = 50.0  # detection 1 (score 0.2 <= 0.3): no column, never wins
    scores, classes = torch.tensor([0.9, 0.2]), torch.tensor([0, 0])
    post = _post()
    core = post.core(logits, scores, classes, (3, 3), (3, 3))
    expected_owner = [[1, 1, 1], [3, 3, 2], [3, 3, 2]]
    assert core.owner.tolist() == expected_owner
    assert core.keep.tolist() == [False, True, True, True, False]
    assert core.areas.tolist() == [0, 3, 2, 4, 0]
    assert core.classes.tolist() == [0, 1, 2, 0, 0]
    assert core.scores[3].item() == pytest.approx(0.9)  # the instance takes its detection's score
    # a stuff channel scores the mean softmax probability of the pixels it wins
    top = torch.softmax(logits[[1, 2, 3], 0, 0], 0)[0].item()
    assert core.scores[1].item() == pytest.approx(top, rel=1e-5)
    prediction = post.finish(core)
    ids = {s.category_id: s.id for s in prediction.segments}
    assert sorted(ids) == [10, 20, 30]
    thing = next(s for s in prediction.segments if s.category_id == 10)
    assert thing.isthing and thing.area == 4 and thing.score == pytest.approx(0.9)
    lut = {1: ids[20], 2: ids[30], 3: ids[10]}
    assert prediction.panoptic.tolist() == [[lut[v] for v in row] for row in expected_owner]


def test_box_crop_confines_an_instance_to_its_box() -> None:
    # detection 0 has the largest logit everywhere but its box covers only the left column
    # (input x in [0, 1]); canvas pixel centres sit at x = 0.5, 1.5, 2.5
    logits = torch.full((5, 3, 3), -5.0)
    logits[1] = 1.0  # stuff 20 everywhere
    logits[3] = 3.0
    boxes = torch.tensor([[0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    scores, classes = torch.tensor([0.9, 0.0]), torch.tensor([0, 0])
    plain = _post().core(logits, scores, classes, (3, 3), (3, 3))
    assert (plain.owner == 3).all()
    cropped = _post(box_crop=True).core(logits, scores, classes, (3, 3), (3, 3), boxes)
    assert cropped.owner.tolist() == [[3, 1, 1]] * 3
    with pytest.raises(ValueError, match="box_crop needs the detection boxes"):
        _post(box_crop=True).core(logits, scores, classes, (3, 3), (3, 3))


def test_argmax_min_area_voids_small_segments() -> None:
    logits = torch.full((5, 3, 3), -5.0)
    logits[1] = 1.0
    logits[3, 0, 0] = 4.0  # a one-pixel instance
    core = _post(min_area=1).core(
        logits, torch.tensor([0.9, 0.0]), torch.tensor([0, 0]), (3, 3), (3, 3)
    )
    assert core.owner[0, 0].item() == -1  # won one pixel, needs more than 1: void
    assert core.keep.tolist() == [False, True, False, False, False]


def test_argmax_resamples_corner_aligned_to_the_original_size() -> None:
    # a stride-4 map of 2 x 2 for a 7 x 7 image shown at 8 x 8 (valid 7 x 7 of an 8 x 8 input)
    # channel 1 rises left to right, channel 2 is constant at its midpoint: the boundary falls
    # where the corner-aligned interpolation crosses it
    logits = torch.zeros(4, 2, 2)
    logits[0] = -10.0
    logits[1] = torch.tensor([[0.0, 4.0], [0.0, 4.0]])
    logits[2] = 2.0
    logits[3] = -10.0
    post = DR1MaskPostProcessor(
        class_to_category=[10, 20, 30], is_thing_class=[True, False, False], min_area=0
    )
    core = post.core(logits, torch.tensor([0.0]), torch.tensor([0]), (7, 7), (7, 7))
    # output column x reads feature column ((x + 0.5) - 0.5) / 4 = x / 4: value 4 * x / 4 = x;
    # channel 1 (value x) beats 2 where x > 2: columns 3.. ; ties (x = 2) keep the first channel
    row = core.owner[0].tolist()
    assert row == [2, 2, 1, 1, 1, 1, 1]


def test_paste_merge_pastes_crop_masks_and_fills_stuff() -> None:
    # F: 2 channels on 4 x 4 at stride 4 (a 16 x 16 input); channel 0 is 1 in the left half
    basis = torch.zeros(1, 2, 4, 4)
    basis[0, 0, :, :2] = 1.0
    basis[0, 1, :, 2:] = 1.0
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 16.0], [0.0, 0.0, 0.0, 0.0]]])
    embeddings = torch.tensor([[[20.0, -20.0], [0.0, 0.0]]])  # detection 0 likes channel 0
    stuff = torch.zeros(1, 3, 4, 4)
    stuff[0, 2] = 5.0  # stuff class 2 everywhere in the static columns
    panoptic_logits = torch.cat([stuff, torch.einsum("bkd,bdhw->bkhw", embeddings, basis)], dim=1)
    outputs = DR1MaskOutput(
        cls_logits=(),
        distances=(),
        centerness=(),
        embeddings=(),
        basis=basis,
        stuff_logits=stuff,
        panoptic_logits=panoptic_logits,
        boxes=boxes,
        scores=torch.tensor([[0.8, 0.0]]),
        classes=torch.tensor([[0, 0]]),
        detection_embeddings=embeddings,
    )
    post = DR1MaskPostProcessor(
        class_to_category=[10, 20, 30],
        is_thing_class=[True, False, False],
        merge="paste",
        min_area=0,
    )
    (prediction,) = post(outputs, [(16, 16)], [(16, 16)], (16, 16))
    by_category = {s.category_id: s for s in prediction.segments}
    assert sorted(by_category) == [10, 30]
    thing = by_category[10]
    mask = prediction.panoptic == thing.id
    assert mask[:, :6].all() and not mask[:, 9:].any()  # the box's left half is the instance
    stuff_mask = prediction.panoptic == by_category[30].id
    assert (stuff_mask | mask).all()  # stuff takes every free pixel
    assert np.unique(prediction.panoptic).size == 2
