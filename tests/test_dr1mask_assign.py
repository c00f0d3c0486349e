"""FCOS assignment and DR1Mask targets on hand-built boxes and samples.

Locations sit at ``(s j + 0.5, s i + 0.5)``; the level, instance and centre-sampling outcomes
below are worked out from the FCOS rules in ``dr1mask/assign.py``'s docstring.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskconver.meta.dr1mask.assign import (
    assign_locations,
    interest_ranges,
    level_sizes,
    make_locations,
)
from maskconver.meta.dr1mask.targets import DR1MaskTargetGenerator


def _setup(
    height: int, width: int, strides: list[int], sizes: list[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    shapes = level_sizes(height, width, strides)
    points, location_strides = make_locations(shapes, strides)
    ranges = torch.cat(
        [
            torch.tensor([r]).expand(h * w, 2)
            for (h, w), r in zip(shapes, interest_ranges(sizes, len(strides)))
        ]
    )
    return points, location_strides, ranges, shapes


def _index(shapes: list[tuple[int, int]], level: int, i: int, j: int) -> int:
    return sum(h * w for h, w in shapes[:level]) + i * shapes[level][1] + j


def test_locations_and_ranges() -> None:
    points, strides = make_locations([(2, 3), (1, 2)], [8, 16])
    assert points.tolist() == [
        [0.5, 0.5],
        [8.5, 0.5],
        [16.5, 0.5],
        [0.5, 8.5],
        [8.5, 8.5],
        [16.5, 8.5],
        [0.5, 0.5],
        [16.5, 0.5],
    ]
    assert strides.tolist() == [8.0] * 6 + [16.0] * 2
    assert level_sizes(65, 97, [8, 16, 32]) == [(9, 13), (5, 7), (3, 4)]
    assert interest_ranges([64, 128], 3) == [(0.0, 64.0), (64.0, 128.0), (128.0, math.inf)]
    with pytest.raises(ValueError, match="2 boundaries for 3 levels"):
        interest_ranges([64], 3)


def test_level_by_size_of_interest_and_instance_by_smallest_area() -> None:
    # 32x32 image, levels stride 8 (4x4 locations, sizes [0, 16]) and 16 (2x2, [16, inf))
    points, strides, ranges, shapes = _setup(32, 32, [8, 16], [16])
    boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0], [0.0, 0.0, 32.0, 32.0]])  # A small, B big
    classes = torch.tensor([2, 5])
    a = assign_locations(points, strides, ranges, boxes, classes, radius=1.5)
    # (8.5, 8.5) at stride 8: A gives (4.5, 4.5, 11.5, 11.5), max 11.5 <= 16 -> A;
    # B gives max 23.5 > 16, so B is not a candidate there
    at = _index(shapes, 0, 1, 1)
    assert (a.labels[at].item(), a.gt_index[at].item()) == (2, 0)
    assert a.distances[at].tolist() == [4.5, 4.5, 11.5, 11.5]
    assert a.centerness[at].item() == pytest.approx(4.5 / 11.5)
    # (16.5, 16.5) at stride 8: A (12.5, 12.5, 3.5, 3.5) max 12.5 -> A
    assert a.gt_index[_index(shapes, 0, 2, 2)].item() == 0
    # (0.5, 0.5) at stride 8: outside A; B's max 31.5 > 16 -> background
    assert a.labels[_index(shapes, 0, 0, 0)].item() == -1
    # (16.5, 16.5) at stride 16: A's max 12.5 < 16 (not this level); B's max 16.5 in [16, inf),
    # inside B's centre region (16 +- 24, clipped to B) -> B
    at = _index(shapes, 1, 1, 1)
    assert (a.labels[at].item(), a.gt_index[at].item()) == (5, 1)
    # (0.5, 0.5) at stride 16: B's (0.5, 0.5, 31.5, 31.5) fits [16, inf) and its clipped centre
    # region is B itself -> B as well; background locations carry zero distances
    assert a.gt_index[_index(shapes, 1, 0, 0)].item() == 1
    assert a.distances[_index(shapes, 0, 0, 0)].tolist() == [0.0] * 4

    # one level, nested boxes: locations inside both go to the smaller box
    points, strides, ranges, shapes = _setup(32, 32, [8], [])
    nested = assign_locations(
        points, strides, ranges, boxes, classes, radius=0.0
    )  # radius 0: anywhere inside the box
    inside_a = (points[:, 0] > 4) & (points[:, 0] < 20) & (points[:, 1] > 4) & (points[:, 1] < 20)
    assert torch.equal(
        nested.gt_index[inside_a], torch.zeros(int(inside_a.sum()), dtype=torch.int64)
    )
    assert torch.equal(
        nested.gt_index[~inside_a], torch.ones(int((~inside_a).sum()), dtype=torch.int64)
    )


@pytest.mark.parametrize(("radius", "positives"), [(0.0, 64), (1.0, 4), (2.0, 16)])
def test_centre_sampling_radius(radius: float, positives: int) -> None:
    # a 64x64 box centred at (32, 32) on 8x8 locations of stride 8 (x, y in 0.5, 8.5, ..., 56.5):
    # radius 1 -> region [24, 40]^2 holds 24.5 and 32.5 per axis: 4 locations;
    # radius 2 -> [16, 48]^2: 16.5 .. 40.5, 4 per axis: 16; radius 0: the whole box, all 64
    points, strides, ranges, _ = _setup(64, 64, [8], [])
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    a = assign_locations(points, strides, ranges, boxes, torch.tensor([0]), radius=radius)
    assert int((a.labels >= 0).sum()) == positives
    if radius == 1.0:
        chosen = points[a.labels >= 0].tolist()
        assert sorted(chosen) == [[24.5, 24.5], [24.5, 32.5], [32.5, 24.5], [32.5, 32.5]]


def test_no_boxes_means_background_everywhere() -> None:
    points, strides, ranges, _ = _setup(16, 16, [8], [])
    a = assign_locations(
        points, strides, ranges, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), radius=1.5
    )
    assert (a.labels == -1).all() and (a.gt_index == -1).all() and (a.centerness == 0).all()


def test_targets_of_a_hand_made_sample(make_sample) -> None:  # noqa: ANN001
    # 16x16: stuff 5 (class 1) top half, thing 2 (category 1) and crowd thing 3, void 0,
    # padding -1 in the last column
    panoptic = np.full((16, 16), 5, dtype=np.int32)
    panoptic[8:, :] = 0
    panoptic[8:16, 0:8] = 2  # a thing 8x8 at the bottom left
    panoptic[9:12, 10:13] = 3  # a crowd thing
    panoptic[:, 15] = -1
    sample = make_sample(panoptic, {2: 1, 3: 1, 5: 9}, thing_categories=(1,), crowd=(3,))
    generator = DR1MaskTargetGenerator(
        num_classes=2,
        category_to_class={1: 0, 9: 1},
        thing_category_ids=[1],
        strides=[4, 8],
        sizes_of_interest=[4],
        center_radius=1.5,
        max_instances=3,
        mask_size=4,
        target_stride=2,
    )
    t = generator(sample)
    assert t.num_instances == 1  # the crowd thing gets no slot
    assert t.boxes[0].tolist() == [0.0, 8.0, 8.0, 16.0]
    assert t.classes.tolist() == [0, -1, -1]
    assert t.instance_valid.tolist() == [True, False, False]
    assert torch.equal(t.mask_crops[0], torch.ones(4, 4, dtype=torch.uint8))  # box = mask
    assert t.static_valid.tolist() == [False, True]  # class 0 is a thing: no static column
    # unified target at stride 2: pixel (i, j) = input pixel (2i, 2j)
    expected = np.full((8, 8), -1)
    expected[:4, :] = 1  # stuff class 1 (the padding column 15 is odd: never sampled)
    expected[4:, :4] = 2 + 0  # num_classes + slot 0
    assert t.panoptic.tolist() == expected.tolist()
    # the instance's positives all point at slot 0 with class 0, nothing else is positive
    positive = t.labels >= 0
    assert positive.any()
    assert set(t.labels[positive].tolist()) == {0} and set(t.gt_index[positive].tolist()) == {0}
    assert t.labels.shape == (4 * 4 + 2 * 2,)
