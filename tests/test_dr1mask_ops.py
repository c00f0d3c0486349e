"""DR1Mask's pure-torch operators against hand-derived values and NumPy references.

GIoU and centerness values are worked out by hand below; NMS and RoIAlign are compared with
straightforward NumPy re-implementations of their definitions (greedy suppression; torchvision's
bilinear RoIAlign kernel with one sample per bin).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskconver.meta.dr1mask.boxes import (
    box_iou,
    centerness_target,
    decode_distances,
    encode_distances,
    giou_loss,
    mask_boxes,
)
from maskconver.meta.dr1mask.nms import batched_nms, nms, nms_keep
from maskconver.meta.dr1mask.roi_align import corner_shift, roi_align

# --------------------------------------------------------------------------------------------
# boxes


def test_giou_of_nested_boxes() -> None:
    # pred (1,1,1,1) is a 2x2 box inside the 4x4 target (2,2,2,2): IoU = 4/16, the enclosing box
    # is the target itself (no penalty) -> GIoU 0.25, loss 0.75
    loss = giou_loss(torch.tensor([[1.0, 1, 1, 1]]), torch.tensor([[2.0, 2, 2, 2]]))
    assert loss.item() == pytest.approx(0.75)


def test_giou_of_crossing_boxes() -> None:
    # pred (l,t,r,b) = (3,1,1,1): x in [-3, 1], y in [-1, 1], area 8
    # target (1,2,3,2):           x in [-1, 3], y in [-2, 2], area 16
    # intersection x [-1, 1] x y [-1, 1] = 4; union 8 + 16 - 4 = 20
    # enclosing x [-3, 3] x y [-2, 2] = 24 -> GIoU = 4/20 - (24 - 20)/24 = 1/5 - 1/6 = 1/30
    loss = giou_loss(torch.tensor([[3.0, 1, 1, 1]]), torch.tensor([[1.0, 2, 3, 2]]))
    assert loss.item() == pytest.approx(1 - 1 / 30)
    # the same boxes in corner form through the generic IoU
    pred, target = torch.tensor([[-3.0, -1, 1, 1]]), torch.tensor([[-1.0, -2, 3, 2]])
    assert box_iou(pred, target).item() == pytest.approx(0.2)


def test_giou_is_zero_for_identical_boxes_and_scale_invariant() -> None:
    box = torch.tensor([[2.0, 3, 5, 7]])
    assert giou_loss(box, box).item() == pytest.approx(0.0, abs=1e-6)
    a, b = torch.tensor([[3.0, 1, 1, 1]]), torch.tensor([[1.0, 2, 3, 2]])
    assert giou_loss(8 * a, 8 * b).item() == pytest.approx(giou_loss(a, b).item(), rel=1e-6)


def test_centerness_values() -> None:
    # sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))
    values = centerness_target(torch.tensor([[1.0, 2, 3, 4], [2.0, 2, 2, 2], [1.0, 5, 9, 5]]))
    expected = [math.sqrt(1 / 3 * 2 / 4), 1.0, math.sqrt(1 / 9 * 1.0)]
    assert values.tolist() == pytest.approx(expected)


def test_distance_coding_round_trip() -> None:
    locations = torch.tensor([[4.5, 4.5], [10.0, 2.0]])
    boxes = torch.tensor([[0.0, 1.0, 8.0, 9.0]])
    distances = encode_distances(locations, boxes)  # [L, N, 4]
    assert distances[0, 0].tolist() == [4.5, 3.5, 3.5, 4.5]
    decoded = decode_distances(locations, distances[:, 0])
    assert torch.equal(decoded, boxes.expand(2, -1))


def test_mask_boxes_are_tight_and_exclusive() -> None:
    masks = torch.zeros(2, 6, 7, dtype=torch.bool)
    masks[0, 1:4, 2:6] = True  # rows 1..3, cols 2..5
    assert mask_boxes(masks).tolist() == [[2.0, 1.0, 6.0, 4.0], [0.0, 0.0, 0.0, 0.0]]


# --------------------------------------------------------------------------------------------
# NMS against a NumPy greedy reference


def _numpy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        suppressed = False
        for j in kept:
            x0, y0 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x1, y1 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
            area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (area_i + area_j - inter) > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(int(i))
    return kept


def _random_boxes(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    xy = rng.uniform(0, 40, size=(count, 2))
    wh = rng.uniform(2, 25, size=(count, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    return boxes, rng.uniform(size=count).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("iou", [0.3, 0.6])
def test_nms_matches_numpy_reference(seed: int, iou: float) -> None:
    boxes, scores = _random_boxes(np.random.default_rng(seed), 60)
    kept = nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).tolist()
    assert kept == _numpy_nms(boxes, scores, iou)
    assert len(kept) < 60  # the case is not trivial


@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_never_suppresses_across_classes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes, scores = _random_boxes(rng, 50)
    classes = rng.integers(0, 3, size=50)
    expected = []
    for c in range(3):
        idx = np.flatnonzero(classes == c)
        expected += [int(idx[k]) for k in _numpy_nms(boxes[idx], scores[idx], 0.5)]
    expected.sort(key=lambda i: (-scores[i], i))
    kept = batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), 0.5
    )
    assert kept.tolist() == expected


def test_nms_keep_is_the_mask_of_batched_nms_above_the_threshold() -> None:
    rng = np.random.default_rng(7)
    boxes, scores = _random_boxes(rng, 40)
    classes = rng.integers(0, 2, size=40)
    t_boxes, t_scores, t_classes = (torch.from_numpy(a) for a in (boxes, scores, classes))
    keep = nms_keep(t_boxes, t_scores, t_classes, iou_threshold=0.5, score_threshold=0.3)
    assert keep.shape == (40,) and keep.dtype == torch.bool
    alive = np.flatnonzero(scores > 0.3)
    expected = alive[batched_nms(t_boxes[alive], t_scores[alive], t_classes[alive], 0.5).numpy()]
    assert sorted(torch.nonzero(keep).flatten().tolist()) == sorted(expected.tolist())


def test_nms_of_nothing() -> None:
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)


# --------------------------------------------------------------------------------------------
# RoIAlign against a NumPy version of torchvision's kernel (sampling ratio 1)


def _bilinear(feature: np.ndarray, y: float, x: float) -> np.ndarray:
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return (
        (1 - ly) * (1 - lx) * feature[:, y_low, x_low]
        + (1 - ly) * lx * feature[:, y_low, x_high]
        + ly * (1 - lx) * feature[:, y_high, x_low]
        + ly * lx * feature[:, y_high, x_high]
    )


def _numpy_roi_align(
    features: np.ndarray, box: np.ndarray, image: int, size: int, scale: float, aligned: bool
) -> np.ndarray:
    offset = 0.5 if aligned else 0.0
    x0, y0, x1, y1 = box * scale - offset
    w, h = x1 - x0, y1 - y0
    if not aligned:
        w, h = max(w, 1.0), max(h, 1.0)
    out = np.zeros((features.shape[1], size, size))
    for p in range(size):
        for q in range(size):
            y = y0 + (p + 0.5) * h / size
            x = x0 + (q + 0.5) * w / size
            out[:, p, q] = _bilinear(features[image], y, x)
    return out


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_roi_align_matches_numpy_reference(aligned: bool, scale: float) -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(2, 3, 9, 11)).astype(np.float32)
    size_in = 1 / scale
    boxes = np.array(
        [
            [1.0, 2.0, 7.5, 6.0],  # inside
            [-6.0, -3.0, 5.0, 4.0],  # hangs over the top-left (border and zero reads)
            [6.0, 5.0, 14.0, 12.0],  # hangs over the bottom-right (clamped)
            [3.2, 3.7, 3.4, 3.9],  # smaller than a pixel
        ],
        dtype=np.float32,
    ) * np.float32(size_in)
    images = np.array([0, 1, 0, 1])
    out = roi_align(
        torch.from_numpy(features),
        torch.from_numpy(boxes),
        torch.from_numpy(images),
        5,
        spatial_scale=scale,
        aligned=aligned,
    )
    assert out.shape == (4, 3, 5, 5)
    for r in range(4):
        expected = _numpy_roi_align(features, boxes[r], int(images[r]), 5, scale, aligned)
        np.testing.assert_allclose(out[r].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_corner_shift_reads_corner_convention_maps() -> None:
    # a stride-4 map whose pixel j holds the input column 4j it sits on (corner convention):
    # a bin centred at continuous input x must read x - 0.5 (that point's pixel index)
    stride, width = 4, 10
    columns = (stride * torch.arange(width, dtype=torch.float32)).expand(1, 1, 6, width)
    box = torch.tensor([[6.0, 4.0, 26.0, 12.0]])
    crop = roi_align(
        columns,
        box + corner_shift(stride),
        torch.zeros(1, dtype=torch.int64),
        (2, 5),
        spatial_scale=1 / stride,
    )
    centres = 6.0 + (torch.arange(5) + 0.5) * 20 / 5
    torch.testing.assert_close(crop[0, 0, 0], centres - 0.5)
