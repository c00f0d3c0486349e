"""kMaX-DeepLab targets: strided slicing, one mask per thing / per stuff class, ignored pixels,
the slot cap and batching. Every expected array is written out by hand from the input map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskconver.data.types import PanopticSample, SegmentInfo
from maskconver.meta.kmax.targets import KMaXTargetBatch, KMaXTargetGenerator, KMaXTargets

THING, STUFF_A, STUFF_B = 1, 2, 3  # category ids
CLASSES = {THING: 0, STUFF_A: 1, STUFF_B: 2}


def _sample(panoptic: list[list[int]], segments: list[SegmentInfo]) -> PanopticSample:
    ids = np.asarray(panoptic, dtype=np.int32)
    image = np.zeros((*ids.shape, 3), dtype=np.uint8)
    return PanopticSample(image=image, panoptic=ids, segments=segments, image_id="img7")


def _generator(max_masks: int = 4, **kwargs: bool) -> KMaXTargetGenerator:
    return KMaXTargetGenerator(
        num_classes=3,
        category_to_class=CLASSES,
        thing_category_ids={THING},
        max_masks=max_masks,
        mask_stride=2,
        **kwargs,
    )


def test_strided_slicing_takes_the_top_left_pixel_of_every_block() -> None:
    # 5x5 input, stride 2 -> 3x3 targets from rows/cols 0, 2, 4. Segment 5 (thing) is on the
    # grid at (0, 0) and (2, 2); segment 6 (thing) only at odd rows/columns: no target pixel,
    # so no slot; segment 7 (stuff A) at (4, 4) only.
    panoptic = [
        [5, 6, 0, 0, 0],
        [6, 6, 0, 0, 0],
        [0, 0, 5, 0, 0],
        [0, 0, 0, 6, 0],
        [0, 0, 0, 0, 7],
    ]
    segments = [SegmentInfo(5, THING), SegmentInfo(6, THING), SegmentInfo(7, STUFF_A)]
    targets = _generator()(_sample(panoptic, segments))
    expected_ids = torch.tensor([[0, -1, -1], [-1, 0, -1], [-1, -1, 1]])
    torch.testing.assert_close(targets.mask_ids, expected_ids)
    torch.testing.assert_close(targets.classes, torch.tensor([0, 1, -1, -1]))
    torch.testing.assert_close(
        targets.semantic, torch.tensor([[0, -1, -1], [-1, 0, -1], [-1, -1, 1]])
    )
    assert targets.num_masks == 2
    assert targets.masks.dtype == torch.bool and targets.masks.shape == (4, 3, 3)
    torch.testing.assert_close(targets.masks[0], expected_ids == 0)
    torch.testing.assert_close(targets.masks[1], expected_ids == 1)
    assert not targets.masks[2:].any()


def test_stuff_segments_of_one_class_share_one_mask_things_do_not() -> None:
    # stride 2 on a 4x4 map: target pixel (i, j) = input (2i, 2j)
    panoptic = [
        [1, 0, 2, 0],
        [0, 0, 0, 0],
        [3, 0, 4, 0],
        [0, 0, 0, 0],
    ]
    segments = [
        SegmentInfo(1, STUFF_A),
        SegmentInfo(2, THING),
        SegmentInfo(3, STUFF_A),  # same stuff class as segment 1: merged into slot 0
        SegmentInfo(4, THING),  # a second instance: its own slot
    ]
    targets = _generator()(_sample(panoptic, segments))
    torch.testing.assert_close(targets.mask_ids, torch.tensor([[0, 1], [0, 2]]))
    torch.testing.assert_close(targets.classes, torch.tensor([1, 0, 0, -1]))
    torch.testing.assert_close(targets.semantic, torch.tensor([[1, 0], [1, 0]]))
    assert targets.num_masks == 3
    torch.testing.assert_close(targets.masks[0], torch.tensor([[True, False], [True, False]]))


def test_crowd_void_and_padding_are_ignored() -> None:
    panoptic = [
        [1, 0, 2, 0],
        [0, 0, 0, 0],
        [0, 0, -1, 0],
        [0, 0, 0, 0],
    ]
    segments = [SegmentInfo(1, THING, iscrowd=True), SegmentInfo(2, STUFF_B)]
    targets = _generator()(_sample(panoptic, segments))
    # crowd (0, 0), void (1, 0) and padding (1, 1) -> -1; the stuff segment takes slot 0
    torch.testing.assert_close(targets.mask_ids, torch.tensor([[-1, 0], [-1, -1]]))
    torch.testing.assert_close(targets.semantic, torch.tensor([[-1, 2], [-1, -1]]))
    assert targets.num_masks == 1
    kept = _generator(crowd_as_ignore=False)(_sample(panoptic, segments))
    torch.testing.assert_close(kept.mask_ids, torch.tensor([[0, 1], [-1, -1]]))
    torch.testing.assert_close(kept.classes, torch.tensor([0, 2, -1, -1]))


def test_masks_beyond_the_slots_are_dropped_and_their_pixels_ignored() -> None:
    panoptic = [
        [1, 0, 2, 0],
        [0, 0, 0, 0],
        [3, 0, 4, 0],
        [0, 0, 0, 0],
    ]
    segments = [
        SegmentInfo(1, THING),
        SegmentInfo(2, STUFF_A),
        SegmentInfo(3, THING),  # third mask: dropped with max_masks=2
        SegmentInfo(4, STUFF_A),  # joins slot 1 (its class's mask already has a slot)
    ]
    targets = _generator(max_masks=2)(_sample(panoptic, segments))
    assert targets.num_masks == 2
    torch.testing.assert_close(targets.mask_ids, torch.tensor([[0, 1], [-1, 1]]))
    torch.testing.assert_close(targets.semantic, torch.tensor([[0, 1], [-1, 1]]))
    torch.testing.assert_close(targets.classes, torch.tensor([0, 1]))


def test_output_size_is_ceil_of_input_over_stride_and_targets_stack() -> None:
    generator = KMaXTargetGenerator(
        num_classes=3, category_to_class=CLASSES, thing_category_ids={THING}, max_masks=3
    )  # default stride 4
    panoptic = np.zeros((9, 13), dtype=np.int32)
    panoptic[8, 12] = 1  # the last target pixel (2, 3) = input (8, 12)
    sample = _sample(panoptic.tolist(), [SegmentInfo(1, THING)])
    one = generator(sample)
    assert one.mask_ids.shape == (3, 4)  # ceil(9 / 4), ceil(13 / 4)
    assert one.mask_ids[2, 3] == 0 and int((one.mask_ids >= 0).sum()) == 1
    batch = KMaXTargets.batch_type.stack([one, one])
    assert isinstance(batch, KMaXTargetBatch)
    assert batch.masks.shape == (2, 3, 3, 4) and batch.semantic.shape == (2, 3, 4)
    torch.testing.assert_close(batch.num_masks, torch.tensor([1, 1]))


def test_bad_input_names_the_image_and_the_category() -> None:
    sample = _sample([[1, 0], [0, 0]], [SegmentInfo(1, 99)])
    with pytest.raises(KeyError, match=r"99.*segment 1.*img7"):
        _generator()(sample)
    with pytest.raises(ValueError, match="class indices outside"):
        KMaXTargetGenerator(
            num_classes=2, category_to_class=CLASSES, thing_category_ids={THING}, max_masks=2
        )
