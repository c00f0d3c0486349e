"""Panoptic copy-paste: disjoint segments, fresh ids, covered segments dropped, stuff merge."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from maskconver.data.copy_paste import PanopticCopyPaste
from maskconver.data.synthetic import THING_IDS, SyntheticPanoptic
from maskconver.data.transforms import LargeScaleJitter
from maskconver.data.types import PanopticSample

THING, STUFF_A, STUFF_B = 1, 40, 41


def _consistent(out: PanopticSample) -> None:
    """One map, so segments are disjoint; check ids unique and segments <-> map agree."""
    ids = [s.id for s in out.segments]
    assert len(ids) == len(set(ids))
    values, counts = np.unique(out.panoptic, return_counts=True)
    area = {int(v): int(c) for v, c in zip(values, counts, strict=True) if v != 0}
    assert {s.id: s.area for s in out.segments} == area
    assert (out.panoptic >= 0).all(), "no -1 padding after copy-paste"


@pytest.fixture()
def pair(make_sample: Any) -> tuple[PanopticSample, PanopticSample]:
    """4 x 6 sample and other (digits are segment ids; categories in the dicts)."""
    sample = make_sample(
        [
            [2, 2, 9, 9, 9, 9],
            [2, 2, 9, 9, 9, 9],
            [9, 9, 9, 9, 0, 0],
            [-1, -1, -1, -1, -1, -1],  # padding row
        ],
        {2: THING, 9: STUFF_A},
        thing_categories=(THING,),
        image_id="s",
    )
    other = make_sample(
        [
            [5, 5, 5, 0, 0, 0],  # thing 5 covers all of sample's thing 2 (cols 0-1)
            [5, 5, 5, 0, 0, 0],
            [0, 0, 0, 0, 7, 7],  # stuff 7 (same class as sample's 9)
            [8, 8, 8, 8, -1, -1],  # stuff 8 (new class); padding
        ],
        {5: THING, 7: STUFF_A, 8: STUFF_B},
        thing_categories=(THING,),
        crowd=(5,),
        image_id="o",
    )
    return sample, other


def test_paste_everything(pair: tuple[PanopticSample, PanopticSample]) -> None:
    sample, other = pair
    out = PanopticCopyPaste(thing_category_ids={THING}, prob=1.0)(
        sample, other, np.random.default_rng(0)
    )
    # fresh ids start above every id of sample (max 9): thing 5 -> 10, new stuff class 41 -> 11;
    # stuff 7 (class 40) merges into sample's segment 9
    expected = np.array(
        [
            [10, 10, 10, 9, 9, 9],
            [10, 10, 10, 9, 9, 9],
            [9, 9, 9, 9, 9, 9],
            [11, 11, 11, 11, 0, 0],  # sample padding -> void, other's padding is not pasted
        ]
    )
    np.testing.assert_array_equal(out.panoptic, expected)
    got = [(s.id, s.category_id, s.iscrowd, s.isthing, s.area) for s in out.segments]
    # segment 2 was fully covered and is gone; crowd flag of the pasted thing is kept;
    # areas: 9 -> 3 + 3 + 6 = 12, 10 -> 2 rows x 3 = 6, 11 -> 4
    assert got == [
        (9, STUFF_A, False, False, 12),
        (10, THING, True, True, 6),
        (11, STUFF_B, False, False, 4),
    ]
    _consistent(out)
    # image pixels are copied from other where pasted, kept from sample elsewhere
    pasted = np.isin(out.panoptic, [10, 11]) | ((out.panoptic == 9) & (other.panoptic == 7))
    np.testing.assert_array_equal(out.image[pasted], other.image[pasted])
    np.testing.assert_array_equal(out.image[~pasted], sample.image[~pasted])
    assert out.meta["copy_paste_source"] == "o" and out.image_id == "s"


def test_paste_nothing_turns_padding_into_void(pair: tuple[PanopticSample, PanopticSample]) -> None:
    sample, other = pair
    out = PanopticCopyPaste(thing_category_ids={THING}, prob=0.0)(
        sample, other, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(out.panoptic, np.where(sample.panoptic == -1, 0, sample.panoptic))
    np.testing.assert_array_equal(out.image, sample.image)
    assert [(s.id, s.area) for s in out.segments] == [(2, 4), (9, 12)]  # 9: 4 + 4 + 4


def test_inputs_untouched_and_predicate_form(pair: tuple[PanopticSample, PanopticSample]) -> None:
    sample, other = pair
    before = (
        sample.panoptic.copy(),
        other.panoptic.copy(),
        sample.image.copy(),
        [*sample.segments],
    )
    paste = PanopticCopyPaste(thing_category_ids=lambda c: c == THING, prob=1.0)
    paste(sample, other, np.random.default_rng(0))
    np.testing.assert_array_equal(sample.panoptic, before[0])
    np.testing.assert_array_equal(other.panoptic, before[1])
    np.testing.assert_array_equal(sample.image, before[2])
    assert sample.segments == before[3]


def test_size_mismatch_needs_jitter(make_sample: Any) -> None:
    sample, other = make_sample([[1, 1]]), make_sample([[1, 1, 1]], image_id=9)
    with pytest.raises(ValueError, match="image id 9 onto 1"):
        PanopticCopyPaste(thing_category_ids={1})(sample, other, np.random.default_rng(0))
    with pytest.raises(ValueError, match="probability"):
        PanopticCopyPaste(thing_category_ids={1}, prob=1.5)


def test_random_synthetic_pairs_with_jitter() -> None:
    ds = SyntheticPanoptic(6, seed=2)
    size = (96, 112)
    lsj = LargeScaleJitter(size, 0.5, 1.5)
    paste = PanopticCopyPaste(
        thing_category_ids=THING_IDS, prob=0.5, jitter=LargeScaleJitter(size, 0.3, 1.0)
    )
    for i in range(0, 6, 2):
        rng = np.random.default_rng(i)
        sample = lsj(ds[i], rng)
        out = paste(sample, ds[i + 1], rng)
        assert out.panoptic.shape == size
        _consistent(out)
        old = {s.id for s in sample.segments}
        new = [s for s in out.segments if s.id not in old]
        assert all(s.id > max(old) for s in new), "pasted ids never collide with sample's"
        stuff = [s.category_id for s in out.segments if not s.isthing]
        assert len(stuff) == len(set(stuff)), "one segment per stuff class"
