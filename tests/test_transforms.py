"""Joint image/panoptic transforms: alignment, sizes, meta, segment bookkeeping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from maskconver.data.transforms import (
    IMAGE_PAD_COLOR,
    Compose,
    LargeScaleJitter,
    RandomHorizontalFlip,
    ResizePad,
    crop,
    pad_to,
    resize,
)
from maskconver.data.types import PanopticSample

BLOCK = 16  # id blocks of 16x16 px: interiors survive resizing by the scales used here (>= 0.75)
INTERIOR = 1  # a pixel is "interior" if its 3x3 neighbourhood has one id


@pytest.fixture()
def blocks(make_sample: Any) -> PanopticSample:
    """64 x 96 map of 16x16 blocks with ids 1..31 (image colours encode the ids)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(1, 32, size=(64 // BLOCK, 96 // BLOCK))
    ids = np.kron(coarse, np.ones((BLOCK, BLOCK), dtype=np.int64))
    return make_sample(ids, thing_categories=(1,))


def _check_aligned(sample: PanopticSample, make_sample: Any) -> None:
    """Interior pixels have exactly their id's colour (+-2); padding has the pad colour."""
    ids, image = sample.panoptic, sample.image.astype(np.int16)
    assert ids.shape == image.shape[:2]
    pad = ids == -1
    assert (sample.image[pad] == np.array(IMAGE_PAD_COLOR, np.uint8)).all()
    h, w = ids.shape
    padded = np.pad(ids, INTERIOR, mode="edge")
    interior = np.ones_like(ids, dtype=bool)
    for dy in range(2 * INTERIOR + 1):
        for dx in range(2 * INTERIOR + 1):
            interior &= padded[dy : dy + h, dx : dx + w] == ids
    interior &= ~pad
    assert interior.sum() > 0.2 * (~pad).sum(), "test needs enough interior pixels"
    expected = np.array([make_sample.color(i) for i in range(32)], dtype=np.int16)[ids[interior]]
    assert np.abs(image[interior] - expected).max() <= 2


def _check_segments(sample: PanopticSample) -> None:
    ids, counts = np.unique(sample.panoptic, return_counts=True)
    area = {int(k): int(c) for k, c in zip(ids, counts, strict=True) if k > 0}
    assert {s.id: s.area for s in sample.segments} == area


def test_flip_twice_is_identity_and_aligned(blocks: PanopticSample, make_sample: Any) -> None:
    flip = RandomHorizontalFlip(p=1.0)
    rng = np.random.default_rng(0)
    once = flip(blocks, rng)
    np.testing.assert_array_equal(once.panoptic, blocks.panoptic[:, ::-1])
    _check_aligned(once, make_sample)
    twice = flip(once, rng)
    np.testing.assert_array_equal(twice.image, blocks.image)
    np.testing.assert_array_equal(twice.panoptic, blocks.panoptic)
    assert twice.segments == blocks.segments
    never = RandomHorizontalFlip(p=0.0)(blocks, rng)
    np.testing.assert_array_equal(never.panoptic, blocks.panoptic)


def test_resize_nearest_keeps_ids_exact(make_sample: Any) -> None:
    # 2x2 map scaled by 2: output pixel i samples input floor((i + 0.5) / 2) -> [0, 0, 1, 1]
    s = make_sample([[1, 2], [3, 4]], {1: 1, 2: 1, 3: 2, 4: 2})
    up = resize(s, 2.0)
    np.testing.assert_array_equal(
        up.panoptic, [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    )
    assert [seg.area for seg in up.segments] == [4, 4, 4, 4]
    # 4x4 scaled by 0.5: output pixel i samples input floor((i + 0.5) * 2) = 1, 3
    down = resize(up, 0.5)
    np.testing.assert_array_equal(down.panoptic, [[1, 2], [3, 4]])


def test_resize_aligned(blocks: PanopticSample, make_sample: Any) -> None:
    for scale in (0.75, 1.6):
        out = resize(blocks, scale)
        assert out.panoptic.shape == (round(64 * scale), round(96 * scale))
        assert set(np.unique(out.panoptic)) <= set(np.unique(blocks.panoptic))
        _check_aligned(out, make_sample)
        _check_segments(out)


def test_pad_to(make_sample: Any) -> None:
    s = make_sample([[1, 0], [2, 2]])
    out = pad_to(s, (3, 4))
    np.testing.assert_array_equal(out.panoptic, [[1, 0, -1, -1], [2, 2, -1, -1], [-1, -1, -1, -1]])
    assert (out.image[2, :] == IMAGE_PAD_COLOR).all() and (
        out.image[:, 2:] == IMAGE_PAD_COLOR
    ).all()
    np.testing.assert_array_equal(out.image[:2, :2], s.image)
    with pytest.raises(ValueError, match="image id 1: cannot pad"):
        pad_to(s, (1, 4))


def test_crop_drops_vanished_segments(make_sample: Any) -> None:
    s = make_sample([[1, 1, 2], [1, 1, 2], [3, 3, 2]])
    out = crop(s, 0, 0, 2, 2)  # only segment 1 remains, area 4
    assert [(seg.id, seg.area) for seg in out.segments] == [(1, 4)]
    with pytest.raises(ValueError, match="outside"):
        crop(s, 2, 2, 2, 2)


def test_lsj_exact_sizes_and_crops(make_sample: Any) -> None:
    s = make_sample(np.arange(40 * 60).reshape(40, 60) % 7 + 1)
    rng = np.random.default_rng(0)
    # s = 1: target (32, 48); scale = min(32/40, 48/60) = 0.8 -> (32, 48), no crop, no pad
    out = LargeScaleJitter((32, 48), 1.0, 1.0)(s, rng)
    assert out.panoptic.shape == (32, 48) and (out.panoptic > 0).all()
    assert out.meta["valid_size"] == (32, 48) and out.meta["orig_size"] == (40, 60)
    # s = 0.5: target (16, 24); scale 0.4 -> (16, 24) then padding to (32, 48)
    out = LargeScaleJitter((32, 48), 0.5, 0.5)(s, rng)
    assert (out.panoptic[16:] == -1).all() and (out.panoptic[:, 24:] == -1).all()
    assert (out.panoptic[:16, :24] > 0).all() and out.meta["valid_size"] == (16, 24)
    # s = 2: target (64, 96); scale 1.6 -> (64, 96) then a 32 x 48 crop, no padding
    out = LargeScaleJitter((32, 48), 2.0, 2.0)(s, rng)
    assert out.panoptic.shape == (32, 48) and (out.panoptic > 0).all()


def test_lsj_random_scales_aligned(blocks: PanopticSample, make_sample: Any) -> None:
    lsj = LargeScaleJitter((64, 80), 0.8, 2.0)
    for seed in range(6):
        out = lsj(blocks, np.random.default_rng(seed))
        assert out.panoptic.shape == (64, 80) and out.image.shape == (64, 80, 3)
        vh, vw = out.meta["valid_size"]
        assert (out.panoptic[:vh, :vw] >= 0).all() and (out.panoptic[vh:] == -1).all()
        assert (out.panoptic[:, vw:] == -1).all()
        _check_aligned(out, make_sample)
        _check_segments(out)


def test_compose_flip_lsj_deterministic(blocks: PanopticSample, make_sample: Any) -> None:
    pipeline = Compose([RandomHorizontalFlip(0.5), LargeScaleJitter((96, 96), 0.8, 1.5)])
    a = pipeline(blocks, np.random.default_rng(3))
    b = pipeline(blocks, np.random.default_rng(3))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    _check_aligned(a, make_sample)


def test_resize_pad_meta(blocks: PanopticSample, make_sample: Any) -> None:
    # 64 x 96 -> longest side 144: scale 1.5 -> (96, 144), padded to 144 x 144
    out = ResizePad(144)(blocks)
    assert out.panoptic.shape == (144, 144)
    assert out.meta["valid_size"] == (96, 144) and out.meta["orig_size"] == (64, 96)
    assert (out.panoptic[96:] == -1).all() and (out.panoptic[:96] > 0).all()
    _check_aligned(out, make_sample)
    # portrait 30 x 20 -> 45: scale 1.5 -> (45, 30)
    tall = ResizePad(45)(
        PanopticSample(np.zeros((30, 20, 3), np.uint8), np.ones((30, 20), np.int32), [])
    )
    assert tall.meta["valid_size"] == (45, 30) and tall.meta["orig_size"] == (30, 20)


def test_transforms_do_not_mutate_input(blocks: PanopticSample) -> None:
    image, panoptic = blocks.image.copy(), blocks.panoptic.copy()
    segments, meta = [*blocks.segments], dict(blocks.meta)
    rng = np.random.default_rng(0)
    for t in (RandomHorizontalFlip(1.0), LargeScaleJitter((30, 30), 0.3, 2.0), ResizePad(50)):
        out = t(blocks, rng)
        out.segments[0].area = -5
        out.meta["x"] = 1
    np.testing.assert_array_equal(blocks.image, image)
    np.testing.assert_array_equal(blocks.panoptic, panoptic)
    assert blocks.segments == segments and blocks.meta == meta


def test_bad_input_names_image(make_sample: Any) -> None:
    s = make_sample([[1, 2]], image_id="img7")
    s.panoptic = np.ones((3, 3), np.int32)
    with pytest.raises(ValueError, match="image id img7: panoptic"):
        RandomHorizontalFlip(1.0)(s, np.random.default_rng(0))
    with pytest.raises(ValueError, match="scale_min"):
        LargeScaleJitter((8, 8), 2.0, 1.0)
