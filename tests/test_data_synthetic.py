"""Synthetic dataset: determinism, consistency, content statistics, writer and CLI."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pytest

from maskconver.commands import data as data_command
from maskconver.data.coco_panoptic import CocoPanopticDataset
from maskconver.data.synthetic import GRASS, SKY, THING_IDS, WALL, SyntheticPanoptic
from maskconver.data.types import PanopticSample

STUFF_IDS = (SKY, GRASS, WALL)
STATS_IMAGES = 48


@pytest.fixture(scope="module")
def many() -> list[PanopticSample]:
    ds = SyntheticPanoptic(STATS_IMAGES, seed=3)
    return [ds[i] for i in range(STATS_IMAGES)]


def test_same_seed_same_arrays() -> None:
    a, b = SyntheticPanoptic(4, seed=7)[2], SyntheticPanoptic(4, seed=7)[2]
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    assert a.segments == b.segments and a.image_id == 2


def test_different_index_seed_or_stream_differ() -> None:
    base = SyntheticPanoptic(4, seed=7)[2]
    for other in (
        SyntheticPanoptic(4, seed=7)[3],
        SyntheticPanoptic(4, seed=8)[2],
        SyntheticPanoptic(4, seed=7, stream=1)[2],
    ):
        same = other.image.shape == base.image.shape and (other.image == base.image).all()
        assert not same


def test_sample_is_pure_function_of_seed_and_index() -> None:
    # stream 0 draws from default_rng([seed, index]); access order must not matter
    ds = SyntheticPanoptic(5, seed=1)
    forward = [ds[i].panoptic for i in range(5)]
    backward = [ds[i].panoptic for i in reversed(range(5))][::-1]
    for f, b in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(f, b)
    first_draw = np.random.default_rng([1, 3]).integers(96, 161, size=2)
    assert ds[3].image.shape[:2] == tuple(first_draw)


def test_segments_match_the_map(synthetic_dataset: SyntheticPanoptic) -> None:
    for i in range(len(synthetic_dataset)):
        s = synthetic_dataset[i]
        assert s.image.dtype == np.uint8 and s.image.shape == (*s.panoptic.shape, 3)
        assert s.panoptic.dtype == np.int32 and s.panoptic.min() >= 0
        ids = [seg.id for seg in s.segments]
        assert len(ids) == len(set(ids)), "segment ids must be unique"
        in_map, counts = np.unique(s.panoptic, return_counts=True)
        area = {int(k): int(c) for k, c in zip(in_map, counts, strict=True) if k != 0}
        assert set(ids) == set(area), "every segment occurs in the map and vice versa"
        for seg in s.segments:
            assert seg.area == area[seg.id]
            assert seg.isthing == (seg.category_id in THING_IDS)
            assert not seg.iscrowd
        assert s.meta["orig_size"] == s.panoptic.shape


def test_categories_non_contiguous(synthetic_dataset: SyntheticPanoptic) -> None:
    cats = synthetic_dataset.categories
    assert [c.id for c in cats.categories] == [1, 3, 7, 12, 20, 31, 44]
    assert [c.name for c in cats.categories if c.isthing] == ["disk", "square", "triangle", "cross"]
    assert [c.name for c in cats.categories if not c.isthing] == ["sky", "grass", "wall"]


def test_content_statistics(many: list[PanopticSample]) -> None:
    categories = {seg.category_id for s in many for seg in s.segments}
    assert categories == set(THING_IDS) | set(STUFF_IDS), "every class occurs"
    for s in many:
        assert any(not seg.isthing for seg in s.segments), "every image has stuff"
    assert sum(any(seg.isthing for seg in s.segments) for s in many) >= STATS_IMAGES * 0.9
    assert sum(bool((s.panoptic == 0).any()) for s in many) >= STATS_IMAGES * 0.9, "void occurs"
    shapes = [s.panoptic.shape for s in many]
    assert all(96 <= h <= 160 and 96 <= w <= 160 for h, w in shapes)
    assert sum(h != w for h, w in shapes) >= STATS_IMAGES * 0.8, "mostly non-square"
    assert len(set(shapes)) >= STATS_IMAGES * 0.8, "many sizes"


def test_object_sizes_tiny_to_large(many: list[PanopticSample]) -> None:
    # visible size ~ sqrt(area): a 4 px disk has area ~ 13 (side ~ 3.5); large ones reach
    # 60% of the short side (a 90 px square of half side 0.8 * 45 has area 72^2 = 5184)
    sides = np.sqrt([seg.area for s in many for seg in s.segments if seg.isthing])
    assert sides.min() <= 6, "tiny objects occur"
    assert sides.max() >= 50, "large objects occur"
    assert 12 <= np.median(sides) <= 40, "most objects are medium"


def test_touching_instances_of_same_class(many: list[PanopticSample]) -> None:
    def touching(s: PanopticSample) -> bool:
        cat = {seg.id: seg.category_id for seg in s.segments if seg.isthing}
        m = s.panoptic
        for a, b in ((m[:, 1:], m[:, :-1]), (m[1:, :], m[:-1, :])):
            pairs = np.unique(np.stack([a[a != b], b[a != b]], axis=1), axis=0)
            if any(x in cat and y in cat and cat[x] == cat[y] for x, y in pairs.tolist()):
                return True
        return False

    assert sum(touching(s) for s in many) >= 3


def test_crowd_prob() -> None:
    crowd = SyntheticPanoptic(3, seed=0, crowd_prob=1.0)
    for i in range(3):
        assert all(seg.iscrowd == seg.isthing for seg in crowd[i].segments)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="min_size"):
        SyntheticPanoptic(2, min_size=100, max_size=50)
    with pytest.raises(ValueError, match="seed"):
        SyntheticPanoptic(2, seed=-1)
    with pytest.raises(ValueError, match="crowd_prob"):
        SyntheticPanoptic(2, crowd_prob=2.0)
    with pytest.raises(IndexError, match="out of range"):
        SyntheticPanoptic(2)[2]


def test_generation_speed() -> None:
    # target < 5 ms per image (measured 2.8 ms CPU time at 96-160 px); CPU time of this process so
    # other load on the machine matters less; the bound is loose so a busy CI machine does not
    # fail it, but a per-pixel Python loop (~1000x slower) would
    ds = SyntheticPanoptic(30, seed=0)
    ds[0]
    start = time.process_time()
    for i in range(30):
        ds[i]
    assert (time.process_time() - start) / 30 < 0.02


def test_data_synth_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    data_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "data",
            "synth",
            "--out",
            str(tmp_path),
            "--train",
            "2",
            "--val",
            "1",
            "--seed",
            "4",
            "--min-size",
            "64",
            "--max-size",
            "72",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "train2017: 2 images" in out and "val2017: 1 images" in out
    train = CocoPanopticDataset(tmp_path, "train2017")
    assert len(train) == 2 and len(CocoPanopticDataset(tmp_path, "val2017")) == 1
    np.testing.assert_array_equal(
        train[1].panoptic, SyntheticPanoptic(2, seed=4, min_size=64, max_size=72)[1].panoptic
    )
