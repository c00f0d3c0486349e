"""Specifications of the target generator (reference 2.3-2.7) on hand-drawn panoptic maps."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from maskconver.data.types import PanopticSample, SegmentInfo
from maskconver.meta.maskconver.targets import (
    TargetBatch,
    TargetGenerator,
    box_center,
    draw_gaussian,
    gaussian_radius,
    gaussian_sigma,
    mass_center,
    nearest_indices,
    stuff_islands,
)

# Categories of every test: things 1, 2 -> classes 0, 1; stuff 10, 11 -> classes 2, 3.
CATEGORY_TO_CLASS = {1: 0, 2: 1, 10: 2, 11: 3}
THING_IDS = {1, 2}
NUM_CLASSES = 4


def make_generator(**kwargs: object) -> TargetGenerator:
    args: dict[str, object] = dict(
        num_classes=NUM_CLASSES,
        category_to_class=CATEGORY_TO_CLASS,
        thing_category_ids=THING_IDS,
        center_strides=[4],
        max_instances=8,
        stuff_dilation=3,
        min_stuff_area=1,
    )
    args.update(kwargs)
    return TargetGenerator(**args)  # type: ignore[arg-type]


def make_sample(
    panoptic: np.ndarray, segments: list[SegmentInfo], image_id: int = 7
) -> PanopticSample:
    image = np.zeros((*panoptic.shape, 3), np.uint8)
    return PanopticSample(image, panoptic.astype(np.int32), segments, image_id)


def l_shape(height: int, width: int) -> np.ndarray:
    """Rows 2..9 of column 2 plus columns 2..9 of row 9: box (2,2)-(9,9)."""
    mask = np.zeros((height, width), bool)
    mask[2:10, 2] = True
    mask[9, 2:10] = True
    return mask


# ----------------------------------------------------------------------------- gaussian.py


def test_gaussian_radius_three_roots_by_hand() -> None:
    h, w, m = 10.0, 20.0, 0.7
    # case 1: b = h+w = 30, c = hw(1-m)/(1+m) = 200*0.3/1.7; r1 = (b + sqrt(b^2 - 4c)) / 2
    r1 = (30 + math.sqrt(900 - 4 * 200 * 0.3 / 1.7)) / 2  # ~28.77
    # case 2: b = 2(h+w) = 60, c = (1-m)hw = 60, a = 4; r2 = (60 + sqrt(3600 - 16*60)) / 2
    r2 = (60 + math.sqrt(3600 - 960)) / 2  # ~55.69
    # case 3: a = 4m, b = -2m(h+w) = -42, c = (m-1)hw = -60; sqrt(1764 + 16*0.7*60) = sqrt(2436)
    r3 = (-42 + math.sqrt(2436)) / 2  # ~3.678, the minimum (divided by 2, not 2a: the quirk)
    assert r3 < r1 and r3 < r2
    assert gaussian_radius(h, w, m) == pytest.approx(r3, rel=1e-12)
    assert gaussian_radius(h, w, m) == pytest.approx(3.6779, abs=1e-4)
    # symmetric in h and w; a 1-pixel object (0x0 box) has radius 0
    assert gaussian_radius(w, h, m) == pytest.approx(r3, rel=1e-12)
    assert gaussian_radius(0.0, 0.0) == 0.0


def test_gaussian_radius_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="negative"):
        gaussian_radius(-1.0, 2.0)
    with pytest.raises(ValueError, match="min_overlap"):
        gaussian_radius(1.0, 2.0, min_overlap=1.0)


def test_gaussian_sigma() -> None:
    # (2 * max(floor(r), 0) + 1) / 6
    assert gaussian_sigma(3.678) == pytest.approx(7 / 6)
    assert gaussian_sigma(3.0) == pytest.approx(7 / 6)
    assert gaussian_sigma(0.99) == pytest.approx(1 / 6)
    assert gaussian_sigma(0.0) == pytest.approx(1 / 6)
    assert gaussian_sigma(-0.5) == pytest.approx(1 / 6)  # floor(-0.5) = -1 -> max 0


def test_draw_gaussian_untruncated_values_and_max_merge() -> None:
    heatmap = np.zeros((7, 9), np.float32)
    draw_gaussian(heatmap, (3, 4), 1.0)
    assert heatmap[3, 4] == 1.0  # exact peak at the floored center
    assert np.count_nonzero(heatmap == 1.0) == 1
    # exp(-d^2 / (2 sigma^2)) with sigma = 1
    assert heatmap[3, 5] == pytest.approx(math.exp(-0.5), rel=1e-6)  # d^2 = 1
    assert heatmap[4, 5] == pytest.approx(math.exp(-1.0), rel=1e-6)  # d^2 = 2
    assert heatmap[0, 0] == pytest.approx(math.exp(-12.5), rel=1e-5)  # d^2 = 9 + 16: untruncated
    assert heatmap[0, 0] > 0
    # symmetric about the peak
    np.testing.assert_array_equal(heatmap[3, 4 - 3 : 4], heatmap[3, 5 : 5 + 3][::-1])
    np.testing.assert_array_equal(heatmap[:3, 4], heatmap[4:7, 4][::-1])
    # a narrower Gaussian at the same center changes nothing (element-wise max)
    before = heatmap.copy()
    draw_gaussian(heatmap, (3, 4), 0.5)
    np.testing.assert_array_equal(heatmap, before)
    # a second center: the max of both
    draw_gaussian(heatmap, (0, 8), 1.0)
    assert heatmap[0, 8] == 1.0
    assert heatmap[0, 7] == pytest.approx(max(math.exp(-0.5), math.exp(-(9 + 9) / 2)), rel=1e-6)
    with pytest.raises(ValueError, match="outside"):
        draw_gaussian(heatmap, (7, 0), 1.0)


# ----------------------------------------------------------------------------- centers.py


def test_box_center_vs_mass_center_on_l_shape() -> None:
    mask = l_shape(12, 12)
    # box (2,2)-(9,9): center ((2+9)/2, (2+9)/2) = (5.5, 5.5), outside the L
    assert box_center(mask) == (5.5, 5.5)
    assert not mask[5, 5] and not mask[6, 6]
    # 15 pixels: column 2 rows 2..9 (8 px) + row 9 columns 3..9 (7 px)
    # cy = (2+...+9 + 7*9) / 15 = (44 + 63) / 15;  cx = (8*2 + 3+...+9) / 15 = (16 + 42) / 15
    cy, cx = mass_center(mask)
    assert cy == pytest.approx(107 / 15)
    assert cx == pytest.approx(58 / 15)
    with pytest.raises(ValueError, match="empty"):
        box_center(np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="empty"):
        mass_center(np.zeros((3, 3), bool))


@pytest.mark.parametrize(("gap", "expected_islands"), [(4, 1), (5, 2)])
def test_stuff_islands_merge_iff_gap_fits_in_dilation(gap: int, expected_islands: int) -> None:
    # A 5x5 dilation grows each blob by 2 px per side, so two blobs on one row touch
    # (4-connected) iff the gap between them is <= 2 + 2 = 4 columns.
    mask = np.zeros((8, 40), bool)
    mask[2:6, 0:4] = True
    mask[2:6, 4 + gap : 8 + gap] = True
    islands = stuff_islands(mask, dilation=5, max_centers=5, min_area=1)
    assert len(islands) == expected_islands
    # islands partition the class mask
    np.testing.assert_array_equal(np.logical_or.reduce(islands), mask)


def test_stuff_islands_sorted_by_dilated_size_capped_and_area_filtered() -> None:
    mask = np.zeros((20, 60), bool)
    line = np.zeros_like(mask)
    line[2, 2:22] = True  # 20 px; dilated by 5x5: rows 0..4 x cols 0..23 = 5*24 = 120 px
    square = np.zeros_like(mask)
    square[10:16, 40:46] = True  # 36 px; dilated: rows 8..17 x cols 38..47 = 10*10 = 100 px
    mask = line | square
    both = stuff_islands(mask, dilation=5, max_centers=3, min_area=1)
    assert len(both) == 2
    np.testing.assert_array_equal(both[0], line)  # larger DILATED size first, smaller island
    np.testing.assert_array_equal(both[1], square)
    # keep only the first component
    first = stuff_islands(mask, dilation=5, max_centers=1, min_area=1)
    assert len(first) == 1
    np.testing.assert_array_equal(first[0], line)
    # min_area drops the 20-px line but keeps the 36-px square
    big = stuff_islands(mask, dilation=5, max_centers=3, min_area=21)
    assert len(big) == 1
    np.testing.assert_array_equal(big[0], square)
    # ... and when the line is the only kept component, nothing remains
    assert stuff_islands(mask, dilation=5, max_centers=1, min_area=21) == []
    assert stuff_islands(np.zeros((4, 4), bool), max_centers=1, min_area=1) == []
    with pytest.raises(ValueError, match="odd"):
        stuff_islands(mask, dilation=4, max_centers=1, min_area=1)


def test_stuff_islands_default_dilation_61() -> None:
    # 61x61 square dilation = +-30 px: gaps of 60 merge, gaps of 61 do not
    for gap, expected in ((60, 1), (61, 2)):
        mask = np.zeros((4, 140), bool)
        mask[:, 0:2] = True
        mask[:, 2 + gap : 4 + gap] = True
        assert len(stuff_islands(mask, max_centers=3, min_area=1)) == expected


def test_nearest_indices_half_pixel() -> None:
    # floor((i + 0.5) * 2) = 2i + 1 for i < ceil(7/2) = 4: 1, 3, 5, 7 (7 is outside a size-7 axis)
    index, inside = nearest_indices(7, 2)
    np.testing.assert_array_equal(index, [1, 3, 5, 6])
    np.testing.assert_array_equal(inside, [True, True, True, False])
    # stride 4 on 16: floor(4i + 2) = 2, 6, 10, 14
    index, inside = nearest_indices(16, 4)
    np.testing.assert_array_equal(index, [2, 6, 10, 14])
    assert inside.all()


# ----------------------------------------------------------------------------- generator.py


def peak_positions(heatmap: torch.Tensor) -> list[tuple[int, int]]:
    """``(y, x)`` of every pixel exactly 1.0 in a ``[h, w]`` heatmap, raster order."""
    return [tuple(p) for p in torch.nonzero(heatmap == 1.0).tolist()]  # type: ignore[misc]


@pytest.mark.parametrize(
    ("thing_center", "expected_peak", "expected_index"),
    [
        # box center (5.5, 5.5) / stride 4 = (1.375, 1.375) -> peak (1, 1) -> index 1*4 + 1
        ("box", (1, 1), 5),
        # mass center (107/15, 58/15) = (7.13, 3.87) / 4 = (1.78, 0.97) -> (1, 0) -> index 4
        ("mass", (1, 0), 4),
    ],
)
def test_single_scale_thing(
    thing_center: str, expected_peak: tuple[int, int], expected_index: int
) -> None:
    panoptic = np.zeros((16, 16), np.int32)
    mask = l_shape(16, 16)
    panoptic[mask] = 5
    sample = make_sample(panoptic, [SegmentInfo(5, category_id=2)])
    targets = make_generator(thing_center=thing_center)(sample)

    assert [tuple(h.shape) for h in targets.heatmaps] == [(NUM_CLASSES, 4, 4)]
    heatmap = targets.heatmaps[0]
    assert peak_positions(heatmap[1]) == [expected_peak]  # category 2 -> class 1
    assert heatmap[[0, 2, 3]].abs().sum() == 0  # other channels empty
    # box (2,2)-(9,9) -> h = w = 7/4 in heatmap units; sigma from the (tested) radius rule
    sigma = gaussian_sigma(gaussian_radius(7 / 4, 7 / 4, 0.7))
    py, px = expected_peak
    ys, xs = np.arange(4)[:, None], np.arange(4)[None, :]
    expected = np.exp(-((ys - py) ** 2 + (xs - px) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(heatmap[1].numpy(), expected, rtol=1e-5, atol=1e-37)  # float32

    assert targets.num_instances == 1
    assert targets.classes.tolist() == [1] + [-1] * 7
    assert targets.center_indices.tolist() == [expected_index] + [0] * 7
    assert targets.mask_valid.tolist() == [True] + [False] * 7
    assert targets.masks.dtype == torch.uint8 and tuple(targets.masks.shape) == (8, 16, 16)
    np.testing.assert_array_equal(targets.masks[0].numpy(), mask.astype(np.uint8))
    assert targets.masks[1:].sum() == 0
    # no padding, no crowd: every weight is 1 (void counts as negative)
    assert targets.pixel_weights.eq(1).all() and targets.heatmap_weights[0].eq(1).all()


def two_island_map() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16x32 map; stuff category 10 in two islands A (32 px) and B (18 px), far apart."""
    panoptic = np.zeros((16, 32), np.int32)
    a = np.zeros((16, 32), bool)
    a[0:4, 0:8] = True  # box (0,0)-(3,7): center (1.5, 3.5) -> /4 -> peak (0, 0), index 0
    b = np.zeros((16, 32), bool)
    b[13:16, 26:32] = True  # box (13,26)-(15,31): center (14, 28.5) -> (3, 7), index 3*8+7
    panoptic[a | b] = 3
    return panoptic, a, b


def test_stuff_islands_in_generator_whole_class_mask_is_target() -> None:
    panoptic, a, b = two_island_map()
    sample = make_sample(panoptic, [SegmentInfo(3, category_id=10)])
    targets = make_generator(max_stuff_centers=2)(sample)
    assert targets.num_instances == 2
    assert targets.classes[:2].tolist() == [2, 2]
    assert targets.center_indices[:2].tolist() == [0, 31]  # larger island first
    assert peak_positions(targets.heatmaps[0][2]) == [(0, 0), (3, 7)]
    whole = (a | b).astype(np.uint8)
    np.testing.assert_array_equal(targets.masks[0].numpy(), whole)  # not just island A
    np.testing.assert_array_equal(targets.masks[1].numpy(), whole)

    # min area 20: island B (18 px) gets no center, no slot and no heatmap peak
    targets = make_generator(max_stuff_centers=2, min_stuff_area=20)(sample)
    assert targets.num_instances == 1
    assert peak_positions(targets.heatmaps[0][2]) == [(0, 0)]
    np.testing.assert_array_equal(targets.masks[0].numpy(), whole)

    # min area above both islands: the class only appears as heatmap negatives
    targets = make_generator(max_stuff_centers=2, min_stuff_area=33)(sample)
    assert targets.num_instances == 0 and targets.heatmaps[0].sum() == 0


def test_stuff_mass_center_one_center_no_min_area() -> None:
    panoptic, a, b = two_island_map()
    sample = make_sample(panoptic, [SegmentInfo(3, category_id=10)])
    targets = make_generator(stuff_center="mass", min_stuff_area=10**6)(sample)
    # mass center of 32 px of A (mean (1.5, 3.5)) and 18 px of B (mean (14, 28.5)):
    # cy = (32*1.5 + 18*14) / 50 = 6.0, cx = (32*3.5 + 18*28.5) / 50 = 12.5 -> /4 -> (1, 3)
    assert targets.num_instances == 1
    assert targets.center_indices[0].item() == 1 * 8 + 3
    assert peak_positions(targets.heatmaps[0][2]) == [(1, 3)]


def test_slot_cap_drops_stuff_first_but_heatmap_keeps_it() -> None:
    panoptic = np.zeros((16, 16), np.int32)
    panoptic[0:4, 0:4] = 1  # thing, center (1.5, 1.5) -> (0, 0)
    panoptic[0:4, 12:16] = 2  # thing, center (1.5, 13.5) -> (0, 3)
    panoptic[8:16, :] = 3  # stuff, center (11.5, 7.5) -> (2, 1)
    segments = [SegmentInfo(3, 11), SegmentInfo(1, 1), SegmentInfo(2, 2)]  # stuff listed first
    targets = make_generator(max_instances=2)(make_sample(panoptic, segments))
    assert targets.num_instances == 2
    assert targets.classes.tolist() == [0, 1]  # things first, in segment order
    assert targets.center_indices.tolist() == [0, 3]
    # the clipped stuff center is still a positive of its class channel (pitfall 7)
    assert peak_positions(targets.heatmaps[0][3]) == [(2, 1)]
    # with room for it, the stuff slot comes last with the whole class mask
    targets = make_generator(max_instances=4)(make_sample(panoptic, segments))
    assert targets.classes.tolist() == [0, 1, 3, -1]
    assert targets.center_indices.tolist() == [0, 3, 2 * 4 + 1, 0]
    np.testing.assert_array_equal(targets.masks[2].numpy(), (panoptic == 3).astype(np.uint8))


def test_same_floored_center_shares_peak_keeps_two_slots() -> None:
    panoptic = np.zeros((16, 16), np.int32)
    panoptic[4:6, 4:6] = 1  # center (4.5, 4.5) -> (1, 1)
    panoptic[6:8, 6:8] = 2  # center (6.5, 6.5) -> (1, 1)
    targets = make_generator()(make_sample(panoptic, [SegmentInfo(1, 1), SegmentInfo(2, 1)]))
    assert targets.num_instances == 2
    assert targets.center_indices[:2].tolist() == [5, 5]
    assert peak_positions(targets.heatmaps[0][0]) == [(1, 1)]
    assert not torch.equal(targets.masks[0], targets.masks[1])


@pytest.mark.parametrize("crowd_as_ignore", [True, False])
def test_padding_crowd_and_void_weights(crowd_as_ignore: bool) -> None:
    panoptic = np.zeros((7, 7), np.int32)  # void everywhere ...
    panoptic[6, :] = -1  # ... except padding in the last row
    panoptic[0:2, 0:2] = 4  # and a crowd thing
    panoptic[3:5, 3:5] = 5  # and a normal thing
    segments = [SegmentInfo(4, 1, iscrowd=True), SegmentInfo(5, 2)]
    gen = make_generator(center_strides=[2], crowd_as_ignore=crowd_as_ignore)
    targets = gen(make_sample(panoptic, segments))
    ignore = (panoptic == -1) | ((panoptic == 4) & crowd_as_ignore)
    np.testing.assert_array_equal(targets.pixel_weights.numpy(), 1.0 - ignore)
    # heatmap 4x4 samples rows/cols floor((i + 0.5) * 2) = 1, 3, 5, 7; 7 is outside -> weight 0;
    # row 5 samples input row 5 (void, weight 1); the crowd pixel (1, 1) feeds heatmap (0, 0)
    expected = np.ones((4, 4), np.float32)
    expected[3, :] = 0
    expected[:, 3] = 0
    expected[0, 0] = 0.0 if crowd_as_ignore else 1.0
    np.testing.assert_array_equal(targets.heatmap_weights[0].numpy(), expected)
    # the crowd segment never gets a slot or a peak
    assert targets.num_instances == 1 and targets.classes[0].item() == 1
    assert targets.heatmaps[0][0].sum() == 0


def test_mask_stride_downsamples_masks_and_weights() -> None:
    panoptic = np.zeros((8, 8), np.int32)
    panoptic[0:3, 0:3] = 1
    panoptic[7, :] = -1
    targets = make_generator(mask_stride=2)(make_sample(panoptic, [SegmentInfo(1, 1)]))
    # mask pixels sample rows/cols 1, 3, 5, 7: the thing covers input (1, 1) only
    expected_mask = np.zeros((4, 4), np.uint8)
    expected_mask[0, 0] = 1
    np.testing.assert_array_equal(targets.masks[0].numpy(), expected_mask)
    expected_weights = np.ones((4, 4), np.float32)
    expected_weights[3, :] = 0  # input row 7 is padding
    np.testing.assert_array_equal(targets.pixel_weights.numpy(), expected_weights)


def multiscale_map() -> tuple[np.ndarray, list[SegmentInfo]]:
    panoptic = np.zeros((32, 32), np.int32)
    panoptic[2:9, 10:19] = 1  # A: box h=6, w=8 -> half diagonal sqrt(36+64)/2 = 5
    panoptic[20:24, 2:7] = 2  # B: box h=3, w=4 -> half diagonal 2.5
    panoptic[12:19, 28] = 3  # C: box h=6, w=0 -> half diagonal 3 (on both inclusive bounds)
    panoptic[26:32, :] = 4  # stuff: box h=5, w=31 -> half diagonal sqrt(986)/2 = 15.7
    segments = [SegmentInfo(1, 1), SegmentInfo(2, 2), SegmentInfo(3, 1), SegmentInfo(4, 10)]
    return panoptic, segments


def test_multiscale_levels_duplicates_and_offsets() -> None:
    panoptic, segments = multiscale_map()
    gen = make_generator(
        center_strides=[4, 8], level_ranges=[(0, 3), (3, 100)], stuff_center="mass"
    )
    targets = gen(make_sample(panoptic, segments))
    assert [tuple(h.shape) for h in targets.heatmaps] == [(4, 8, 8), (4, 4, 4)]
    assert [tuple(w.shape) for w in targets.heatmap_weights] == [(8, 8), (4, 4)]
    offset1 = 8 * 8  # level 1 starts after the 8x8 level-0 map
    # A center (5, 14): level 1 only -> (0.625, 1.75) -> (0, 1) -> 64 + 0*4 + 1
    # B center (21.5, 4): level 0 only -> (5.375, 1.0) -> (5, 1) -> 5*8 + 1
    # C center (15, 28): both levels -> (3.75, 7) -> 3*8 + 7 and (1.875, 3.5) -> 64 + 1*4 + 3
    # stuff mass center (28.5, 15.5): level 1 -> (3.56, 1.94) -> (3, 1) -> 64 + 3*4 + 1
    assert targets.num_instances == 5
    assert targets.center_indices[:5].tolist() == [
        offset1 + 1,
        41,
        31,
        offset1 + 7,
        offset1 + 13,
    ]
    assert targets.classes[:5].tolist() == [0, 1, 0, 0, 2]
    np.testing.assert_array_equal(targets.masks[2].numpy(), targets.masks[3].numpy())
    np.testing.assert_array_equal(targets.masks[2].numpy(), (panoptic == 3).astype(np.uint8))
    assert peak_positions(targets.heatmaps[0][0]) == [(3, 7)]
    assert peak_positions(targets.heatmaps[1][0]) == [(0, 1), (1, 3)]
    assert peak_positions(targets.heatmaps[0][1]) == [(5, 1)]
    assert peak_positions(targets.heatmaps[1][2]) == [(3, 1)]
    assert targets.heatmaps[1][1].sum() == 0 and targets.heatmaps[0][2].sum() == 0


def test_multiscale_cap_is_over_all_levels_things_first() -> None:
    panoptic, segments = multiscale_map()
    gen = make_generator(center_strides=[4, 8], level_ranges=[(0, 3), (3, 100)], max_instances=4)
    targets = gen(make_sample(panoptic, segments))
    assert targets.num_instances == 4
    assert targets.classes.tolist() == [0, 1, 0, 0]  # the stuff slot is the one dropped
    assert targets.heatmaps[1][2].max() == 1.0  # but its center is still drawn


def test_unknown_category_names_id_and_image() -> None:
    panoptic = np.zeros((8, 8), np.int32)
    panoptic[:2, :2] = 1
    sample = make_sample(panoptic, [SegmentInfo(1, category_id=99)], image_id=1234)
    with pytest.raises(KeyError, match=r"99.*1234"):
        make_generator()(sample)


def test_constructor_rejects_inconsistent_levels() -> None:
    with pytest.raises(ValueError, match="level_ranges"):
        make_generator(center_strides=[4, 8])
    with pytest.raises(ValueError, match="level_ranges"):
        make_generator(center_strides=[4, 8], level_ranges=[(0, 1)])
    with pytest.raises(ValueError, match="class indices"):
        make_generator(category_to_class={1: 0, 2: 9})
    with pytest.raises(ValueError, match="thing_center"):
        make_generator(thing_center="centroid")


def random_sample(size: int, seed: int, n_things: int = 15, n_stuff: int = 5) -> PanopticSample:
    """Stuff bands overlaid with random thing rectangles, the last rows padded."""
    rng = np.random.default_rng(seed)
    panoptic = np.zeros((size, size), np.int32)
    segments = []
    band = size // n_stuff
    for i in range(n_stuff):
        panoptic[i * band : (i + 1) * band] = 100 + i
        segments.append(SegmentInfo(100 + i, 10 + i % 2))
    for i in range(n_things):
        y, x = rng.integers(0, size - 8, 2)
        h, w = rng.integers(3, size // 4, 2)
        panoptic[y : y + h, x : x + w] = 1 + i
        segments.append(SegmentInfo(1 + i, 1 + i % 2))
    panoptic[-size // 16 :] = -1
    present = set(np.unique(panoptic).tolist())
    return make_sample(panoptic, [s for s in segments if s.id in present], image_id=seed)


VARIANTS = {
    "single_box_island": dict(),
    "single_mass_mass": dict(thing_center="mass", stuff_center="mass"),
    "multi_mass_mass": dict(
        center_strides=[4, 8, 16],
        level_ranges=[(0, 8), (6, 16), (14, 1e7)],
        thing_center="mass",
        stuff_center="mass",
        mask_stride=2,
    ),
    "multi_box_island": dict(
        center_strides=[4, 8], level_ranges=[(0, 10), (10, 1e7)], mask_stride=4
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_contract_every_slot_points_at_a_peak(variant: str) -> None:
    gen = make_generator(max_instances=40, max_stuff_centers=2, **VARIANTS[variant])
    items = [gen(random_sample(64, seed)) for seed in range(3)]
    for t in items:
        flat = torch.cat([h.flatten(1) for h in t.heatmaps], dim=1)  # [C, sum h_l w_l]
        n = t.num_instances
        assert n > 0 and t.mask_valid.sum().item() == n
        # each valid slot's flat index lands on a 1.0 peak of its class channel
        assert (flat[t.classes[:n], t.center_indices[:n]] == 1.0).all()
        assert (t.classes[n:] == -1).all() and (t.center_indices[n:] == 0).all()
        assert t.masks[n:].sum() == 0
        if gen.mask_stride == 1:  # (a tiny instance may vanish from a downsampled mask)
            assert t.masks[:n].flatten(1).amax(1).eq(1).all()
        assert all(h.dtype == torch.float32 and h.max() <= 1.0 for h in t.heatmaps)
        assert t.pixel_weights.dtype == torch.float32
    batch = TargetBatch.stack(items)
    assert batch.masks.shape[:2] == (3, 40) and batch.num_instances.shape == (3,)


@pytest.mark.slow
@pytest.mark.parametrize(("size", "budget_ms"), [(128, 4.0), (256, 10.0)])
def test_generator_speed(size: int, budget_ms: float) -> None:
    gen = make_generator(
        max_instances=50, center_strides=[8], stuff_dilation=61, min_stuff_area=1024
    )
    sample = random_sample(size, seed=0)
    assert len(sample.segments) >= 15
    gen(sample)
    timings = []
    for _ in range(30):
        start = time.perf_counter()
        gen(sample)
        timings.append(time.perf_counter() - start)
    best_ms = min(timings) * 1e3  # best of 30 (timeit practice): robust to a busy machine
    assert best_ms < budget_ms
