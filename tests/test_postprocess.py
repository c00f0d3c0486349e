"""find_peaks / gather_at_centers on planted peaks and the panoptic merge on hand-built maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskconver.meta.maskconver.outputs import MaskConverOutput
from maskconver.meta.maskconver.peaks import find_peaks, gather_at_centers
from maskconver.meta.maskconver.postprocess import PanopticPostProcessor, rescale_logits

NEG = float("-inf")  # sigmoid(-inf) == 0 exactly: background that is never a positive peak


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def planted_levels() -> list[torch.Tensor]:
    """Two levels, C = 2.

    Level 0 is 4x5 (flat positions 0..19), level 1 is 2x3 (positions 20..25).
      level 0, class 0: (1,1)=2.0 peak; (1,2)=1.0 suppressed by its neighbour 2.0;
                        (3,3)=(3,4)=0.5 plateau on the bottom/right border -> both kept.
      level 0, class 1: (0,0)=3.0 corner peak; (1,1)=1.5 suppressed by (0,0) in ITS channel;
                        (2,4)=0.0 isolated -> peak with p = 0.5.
      level 1, class 1: (1,2)=1.0 -> position 20 + 1*3 + 2 = 25.
      level 1, class 0: (1,2)=-1.0 -> same position 25, second class.
    """
    lv0 = torch.full((1, 2, 4, 5), NEG)
    lv0[0, 0, 1, 1] = 2.0
    lv0[0, 0, 1, 2] = 1.0
    lv0[0, 0, 3, 3] = 0.5
    lv0[0, 0, 3, 4] = 0.5
    lv0[0, 1, 0, 0] = 3.0
    lv0[0, 1, 1, 1] = 1.5
    lv0[0, 1, 2, 4] = 0.0
    lv1 = torch.full((1, 2, 2, 3), NEG)
    lv1[0, 1, 1, 2] = 1.0
    lv1[0, 0, 1, 2] = -1.0
    return [lv0, lv1]


def test_find_peaks_planted_ties_borders_and_k_beyond_peaks() -> None:
    # 7 peaks exist; ask for 9 so the last two are zero-score fillers.
    scores, classes, indices = find_peaks(planted_levels(), 9)
    assert scores.shape == classes.shape == indices.shape == (1, 9)
    got = [
        (round(s, 5), int(c), int(i)) for s, c, i in zip(scores[0].tolist(), classes[0], indices[0])
    ]
    expected_sorted = [
        (round(sig(3.0), 5), 1, 0),  # corner peak, class 1
        (round(sig(2.0), 5), 0, 6),  # (1,1) -> 1*5+1
        (round(sig(1.0), 5), 1, 25),  # level 1 offset 20 + (1*3+2)
    ]
    assert got[:3] == expected_sorted
    # the plateau pair ties: order between them is unspecified, both must be present
    assert sorted(got[3:5]) == [(round(sig(0.5), 5), 0, 18), (round(sig(0.5), 5), 0, 19)]
    assert got[5] == (0.5, 1, 14)  # (2,4) -> 2*5+4
    assert got[6] == (round(sig(-1.0), 5), 0, 25)  # same pixel as got[2], other class
    assert scores[0, 7:].tolist() == [0.0, 0.0]


def test_find_peaks_suppressed_neighbours_never_selected() -> None:
    _, classes, indices = find_peaks(planted_levels(), 7)
    pairs = set(zip(classes[0].tolist(), indices[0].tolist()))
    assert (0, 7) not in pairs  # (1,2) class 0 next to the 2.0 peak
    assert (1, 6) not in pairs  # (1,1) class 1 next to the 3.0 corner peak


def test_find_peaks_hard_sigmoid_and_batch_independence() -> None:
    lv0, lv1 = planted_levels()
    batch = [torch.cat([lv0, lv0.flip(-1)]), torch.cat([lv1, lv1])]
    scores, classes, indices = find_peaks(batch, 2, hard_sigmoid=True)
    # relu6(3 + 3) / 6 = 1 and relu6(2 + 3) / 6 = 5/6
    assert scores[0].tolist() == pytest.approx([1.0, 5 / 6])
    assert indices[0].tolist() == [0, 6] and classes[0].tolist() == [1, 0]
    # flipped image: the corner peak moves to (0,4) -> 4, the class-0 peak to (1,3) -> 8
    assert indices[1].tolist() == [4, 8] and classes[1].tolist() == [1, 0]


def test_find_peaks_rejects_bad_k() -> None:
    logits = [torch.zeros(1, 3, 3, 3)]  # 9 positions x 3 classes = 27 candidates
    assert find_peaks(logits, 27)[0].shape == (1, 27)
    for k in (0, 28):
        with pytest.raises(ValueError, match=f"k={k} must be in \\[1, positions x classes = 27\\]"):
            find_peaks(logits, k)
    with pytest.raises(ValueError, match="empty"):
        find_peaks([], 1)


def test_gather_at_centers_level_major_row_major() -> None:
    # level 0: [1, 2, 2, 2] values 0..7 -> position p has embedding (p, 4 + p)
    # level 1: [1, 2, 1, 1] value (100, 200) at position 4
    lv0 = torch.arange(8.0).view(1, 2, 2, 2)
    lv1 = torch.tensor([100.0, 200.0]).view(1, 2, 1, 1)
    out = gather_at_centers([lv0, lv1], torch.tensor([[3, 4, 0]]))
    assert out.tolist() == [[[3.0, 7.0], [100.0, 200.0], [0.0, 4.0]]]


# ----------------------------------------------------------------------------------------------
# panoptic merge

CATEGORIES = [11, 22, 33]  # class 0 -> 11 (thing), 1 -> 22 (thing), 2 -> 33 (stuff)
THINGS = [True, True, False]
H, W = 4, 10  # 40-pixel canvas


def processor(**kw: object) -> PanopticPostProcessor:
    args: dict[str, object] = {
        "class_to_category": CATEGORIES,
        "is_thing_class": THINGS,
        "object_threshold": 0.01,
        "overlap_threshold": 0.7,
        "min_area": 0,
    }
    args.update(kw)
    return PanopticPostProcessor(**args)  # type: ignore[arg-type]


def columns(prob: float, lo: int, hi: int) -> torch.Tensor:
    m = torch.zeros(H, W)
    m[:, lo : hi + 1] = prob
    return m


def two_things() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A: score 0.9, prob 0.9 on cols 0-4 (20 px). B: score 0.8, prob 0.8 on cols 3-9 (28 px).

    prob*score: A 0.81, B 0.64 -> A wins cols 0-4 (20 px), B wins cols 5-9 (20 px).
    Own areas (prob > 0.5): A 20, B 28.
    """
    probs = torch.stack([columns(0.9, 0, 4), columns(0.8, 3, 9)])
    return probs, torch.tensor([0.9, 0.8]), torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("overlap", "b_kept"),
    [(0.7, True), (0.75, False)],  # B: won 20 vs 0.7 * 28 = 19.6 (kept) / 0.75 * 28 = 21 (dropped)
)
def test_reference_overlap_filter_and_void_for_dropped(overlap: float, b_kept: bool) -> None:
    pred = processor(overlap_threshold=overlap).merge_probabilities(*two_things())
    assert (pred.panoptic[:, :5] == 1).all()
    assert pred.segments[0].category_id == 11 and pred.segments[0].area == 20
    if b_kept:
        assert (pred.panoptic[:, 5:] == 2).all() and pred.segments[1].category_id == 22
    else:  # B's won pixels become void, NOT re-assigned to A (whose prob there is 0 anyway)
        assert (pred.panoptic[:, 5:] == 0).all() and len(pred.segments) == 1
    assert pred.panoptic.dtype == np.int32


@pytest.mark.parametrize(("min_area", "kept"), [(19, 2), (20, 0)])
def test_reference_min_area_is_strict(min_area: int, kept: int) -> None:
    # both proposals win exactly 20 px; keep iff won > min_area
    pred = processor(min_area=min_area).merge_probabilities(*two_things())
    assert len(pred.segments) == kept


def test_reference_object_threshold_and_no_background_threshold() -> None:
    # A covers cols 0-4 only; C (score 0.005 <= 0.01) would cover everything but is invalid.
    # Pixels where every prob*score is 0 (cols 5-9) go to the best proposal A (argmax tie ->
    # index 0), so A's segment is the whole image: won 40 > 0.7 * own 20.
    probs = torch.stack([columns(0.9, 0, 4), torch.ones(H, W)])
    pred = processor().merge_probabilities(probs, torch.tensor([0.9, 0.005]), torch.tensor([0, 1]))
    assert len(pred.segments) == 1 and pred.segments[0].category_id == 11
    assert (pred.panoptic == 1).all() and pred.segments[0].area == 40


def test_stuff_of_one_class_merges_things_stay_separate() -> None:
    # four column bands of 10 px: thing class 0 twice, stuff class 2 twice
    probs = torch.stack(
        [columns(0.9, 0, 1), columns(0.9, 2, 4), columns(0.9, 5, 7), columns(0.9, 8, 9)]
    )
    scores = torch.tensor([0.5, 0.9, 0.6, 0.7])
    classes = torch.tensor([0, 2, 0, 2])
    pred = processor().merge_probabilities(probs, scores, classes)
    # ids follow descending score:
    # stuff(0.9) -> 1, stuff(0.7) joins 1, thing(0.6) -> 2, thing(0.5) -> 3
    assert [(s.id, s.category_id, s.isthing) for s in pred.segments] == [
        (1, 33, False),
        (2, 11, True),
        (3, 11, True),
    ]
    assert pred.segments[0].score == pytest.approx(0.9)
    assert [s.area for s in pred.segments] == [4 * 5, 4 * 3, 4 * 2]
    assert (pred.panoptic[:, 2:5] == 1).all() and (pred.panoptic[:, 8:] == 1).all()
    assert (pred.panoptic[:, 5:8] == 2).all() and (pred.panoptic[:, :2] == 3).all()


def test_unused_class_index_is_dropped() -> None:
    pp = PanopticPostProcessor(class_to_category=[-1, 5], is_thing_class=[False, True], min_area=0)
    probs = torch.stack([columns(0.9, 0, 9), columns(0.9, 0, 9)])
    pred = pp.merge_probabilities(probs, torch.tensor([0.9, 0.5]), torch.tensor([0, 1]))
    assert [s.category_id for s in pred.segments] == [5] and (pred.panoptic == 1).all()


def test_maskformer_segment_is_won_and_confident() -> None:
    # B: prob 0.8 on cols 3-7, 0.3 on cols 8-9. Winners: A cols 0-4, B cols 5-9 (0.24 > 0).
    # maskformer: B own (>= 0.5) = 20 px, won 20 -> ratio 1 -> kept; segment = won & prob >= 0.5
    # = cols 5-7 (12 px), cols 8-9 void. reference: segment = all 20 won px.
    b = columns(0.8, 3, 7) + columns(0.3, 8, 9)
    probs = torch.stack([columns(0.9, 0, 4), b])
    scores, classes = torch.tensor([0.9, 0.8]), torch.tensor([0, 1])
    mf = processor(merge="maskformer").merge_probabilities(probs, scores, classes)
    assert [s.area for s in mf.segments] == [20, 12] and (mf.panoptic[:, 8:] == 0).all()
    ref = processor().merge_probabilities(probs, scores, classes)
    assert [s.area for s in ref.segments] == [20, 20]


def test_rescale_logits_crops_valid_region_bilinear() -> None:
    # 2x2 logits over a 4x4 padded input whose top-left 2x2 holds the image (orig size 2x2):
    # canvas = ceil(4 * 2 / 2) = 4 -> bilinear 2x upsample of [[0, 4], [8, 16]], crop 2x2:
    # (0,0) = 0; (0,1) = 0.75*0 + 0.25*4 = 1; (1,0) = 0.25*8 = 2;
    # (1,1) = 0.5625*0 + 0.1875*4 + 0.1875*8 + 0.0625*16 = 3.25
    logits = torch.tensor([[[0.0, 4.0], [8.0, 16.0]]])
    out = rescale_logits(logits, (4, 4), (2, 2), (2, 2))
    assert out.tolist() == [[[0.0, 1.0], [2.0, 3.25]]]
    assert rescale_logits(logits, (4, 4), (2, 2), (5, 3)).shape == (1, 5, 3)
    with pytest.raises(ValueError, match="inside the input size"):
        rescale_logits(logits, (4, 4), (6, 2), (2, 2))


def test_call_returns_original_sizes_and_checks_batch() -> None:
    logits = torch.full((2, 3, 8, 8), -5.0)
    logits[:, 0] = 5.0  # proposal 0 covers everything
    out = MaskConverOutput(
        center_logits=(torch.zeros(2, 3, 8, 8),),
        mask_logits=logits,
        scores=torch.tensor([[0.9, 0.5, 0.2]] * 2),
        classes=torch.tensor([[2, 0, 1]] * 2),
        center_indices=torch.zeros(2, 3, dtype=torch.int64),
    )
    preds = processor()(out, [(32, 24), (20, 32)], [(64, 48), (30, 48)], (32, 32))
    assert [p.panoptic.shape for p in preds] == [(64, 48), (30, 48)]
    assert all(len(p.segments) == 1 and p.segments[0].category_id == 33 for p in preds)
    assert preds[0].segments[0].area == 64 * 48
    with pytest.raises(ValueError, match="batch of 2"):
        processor()(out, [(32, 24)], [(64, 48)], (32, 32))


def test_merge_k50_640_is_consistent() -> None:
    # (speed is measured by `maskconver benchmark`, not asserted here)
    rng = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 50, 80, 80, generator=rng) * 4
    out = MaskConverOutput(
        center_logits=(torch.zeros(1, 3, 80, 80),),
        mask_logits=logits,
        scores=torch.rand(1, 50, generator=rng),
        classes=torch.randint(0, 3, (1, 50), generator=rng),
        center_indices=torch.zeros(1, 50, dtype=torch.int64),
    )
    (pred,) = processor(min_area=256)(out, [(640, 640)], [(640, 640)], (640, 640))
    ids = np.unique(pred.panoptic)
    assert set(ids.tolist()) <= {0} | {s.id for s in pred.segments}
    assert sum(s.area for s in pred.segments) == int((pred.panoptic > 0).sum())


@pytest.mark.parametrize("bad", [-1, 2])
def test_proposal_classes_outside_the_class_range_are_refused(bad: int) -> None:
    """Both eager entries (the batch call through ``core`` and ``merge_probabilities``)."""
    pp = PanopticPostProcessor(class_to_category=[4, 5], is_thing_class=[False, True], min_area=0)
    classes = torch.tensor([0, bad])
    scores = torch.tensor([0.9, 0.8])
    with pytest.raises(ValueError, match=r"proposal classes must be in \[0, 2\)"):
        pp.merge_probabilities(torch.rand(2, 4, 4), scores, classes)
    outputs = MaskConverOutput(
        center_logits=(torch.zeros(1, 2, 2, 2),),
        mask_logits=torch.randn(1, 2, 4, 4),
        scores=scores[None],
        classes=classes[None],
        center_indices=torch.zeros(1, 2, dtype=torch.int64),
    )
    with pytest.raises(ValueError, match=r"proposal classes must be in \[0, 2\)"):
        pp(outputs, valid_sizes=[(8, 8)], output_sizes=[(8, 8)], input_size=(8, 8))
