"""The tensor merge core: equal to the previous (whole-canvas) merge, static shapes, traceable.

``previous_merge`` below is the merge as it was before the tensor core existed (maskconver 0.1.0,
``PanopticPostProcessor.merge_probabilities``): every proposal's probabilities zeroed when
invalid, one stable sort, one argmax over all K maps, areas by ``bincount``, and segments
numbered in a Python loop. The core must reproduce its maps and segments exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.meta.maskconver.outputs import MaskConverOutput
from maskconver.meta.maskconver.postprocess import PanopticPostProcessor, rescale_logits
from maskconver.postprocess.merge import descending_order, merge_proposals, sort_proposals

CATEGORIES = [11, 22, -1, 33, 44]  # class 2 maps to no category
THINGS = [True, True, False, False, True]


def previous_merge(
    probs: Tensor,
    scores: Tensor,
    classes: Tensor,
    *,
    merge: str,
    object_threshold: float,
    overlap_threshold: float,
    min_area: int,
    mask_threshold: float,
) -> tuple[np.ndarray, list[tuple[int, int, float, bool, int]]]:
    """The 0.1.0 merge: ``(panoptic map, [(id, category, score, isthing, area)])``."""
    class_to_category = torch.tensor(CATEGORIES)
    usable = class_to_category[classes] != -1
    valid = (scores > object_threshold) & usable
    scores = torch.where(valid, scores, torch.zeros_like(scores))
    probs = probs * valid[:, None, None].to(probs.dtype)
    order = scores.argsort(descending=True, stable=True)
    scores, classes, probs, valid = scores[order], classes[order], probs[order], valid[order]
    num = len(scores)
    winner = (probs * scores[:, None, None]).argmax(dim=0)
    won_area = torch.bincount(winner.flatten(), minlength=num)
    if merge == "reference":
        own_area = (probs > 0.5).flatten(1).sum(1)
        keep = (
            valid
            & (won_area > min_area)
            & (own_area > 0)
            & (won_area > overlap_threshold * own_area)
        )
        in_segment = keep[winner]
    else:
        own_area = (probs >= mask_threshold).flatten(1).sum(1)
        winner_prob = probs.gather(0, winner[None])[0]
        confident = winner_prob >= mask_threshold
        seg_area = torch.bincount(winner[confident], minlength=num)
        ratio = won_area.float() / own_area.clamp(min=1).float()
        keep = valid & (seg_area > 0) & (own_area > 0) & (ratio >= overlap_threshold)
        in_segment = keep[winner] & confident
    segment_ids = [0] * (num + 1)
    segments: list[list] = []
    stuff_segment: dict[int, int] = {}
    for k in torch.nonzero(keep).flatten().tolist():
        cls = int(classes[k])
        if not THINGS[cls] and cls in stuff_segment:
            segment_ids[k] = stuff_segment[cls]
            continue
        seg_id = len(segments) + 1
        segment_ids[k] = seg_id
        if not THINGS[cls]:
            stuff_segment[cls] = seg_id
        segments.append([seg_id, CATEGORIES[cls], float(scores[k]), THINGS[cls], 0])
    segment_of = torch.tensor(segment_ids)
    panoptic = segment_of[torch.where(in_segment, winner, torch.full_like(winner, num))]
    areas = torch.bincount(panoptic.flatten(), minlength=len(segments) + 1).tolist()
    for seg in segments:
        seg[4] = areas[seg[0]]
    return panoptic.numpy().astype(np.int32), [tuple(s) for s in segments]


def processor(merge: str, **kw: float) -> PanopticPostProcessor:
    return PanopticPostProcessor(
        class_to_category=CATEGORIES,
        is_thing_class=THINGS,
        merge=merge,
        **kw,  # type: ignore[arg-type]
    )


def random_case(seed: int, k: int, h: int, w: int, ties: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Random probabilities, scores and classes; ``ties``: values on a coarse grid (many ties)."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(k, h, w, generator=g) ** 2
    scores = torch.rand(k, generator=g)
    if ties:  # equal products, equal scores, whole proposals of zeros
        probs = (probs * 4).round() / 4
        scores = (scores * 3).round() / 3
        probs[0] = 0.0
    classes = torch.randint(0, len(CATEGORIES), (k,), generator=g)
    return probs, scores, classes


SETTINGS = [
    {"object_threshold": 0.01, "overlap_threshold": 0.7, "min_area": 3, "mask_threshold": 0.5},
    {"object_threshold": 0.3, "overlap_threshold": 0.5, "min_area": 0, "mask_threshold": 0.4},
    {"object_threshold": 0.0, "overlap_threshold": 0.0, "min_area": 0, "mask_threshold": 0.0},
    {"object_threshold": -1.0, "overlap_threshold": 0.2, "min_area": 1, "mask_threshold": 0.6},
]


@pytest.mark.parametrize("merge", ["reference", "maskformer"])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_core_equals_the_previous_merge(merge: str, ties: bool, setting: int) -> None:
    kw = SETTINGS[setting]
    total = 0
    for seed in range(6):
        k = [1, 3, 7, 12, 20, 9][seed]
        probs, scores, classes = random_case(seed + 10 * setting, k, 9, 13, ties)
        expected_map, expected_segments = previous_merge(
            probs,
            scores,
            classes,
            merge=merge,
            **kw,  # type: ignore[arg-type]
        )
        for chunk in (1, 2, 5, 64):
            pp = processor(merge, **kw)
            pp.chunk = chunk
            pred = pp.merge_probabilities(probs, scores, classes)
            np.testing.assert_array_equal(pred.panoptic, expected_map)
            got = [(s.id, s.category_id, s.score, s.isthing, s.area) for s in pred.segments]
            assert got == expected_segments, (seed, chunk)
        total += len(expected_segments)
    assert total > 0  # the cases are not trivially empty


@pytest.mark.parametrize("merge", ["reference", "maskformer"])
def test_empty_images_are_all_void(merge: str) -> None:
    probs = torch.rand(4, 5, 6)
    # every score at or below the threshold, or a class with no category
    for scores, classes in [
        (torch.tensor([0.01, 0.0, 0.005, 0.01]), torch.tensor([0, 1, 3, 4])),
        (torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([2, 2, 2, 2])),
    ]:
        pred = processor(merge).merge_probabilities(probs, scores, classes)
        assert pred.segments == [] and (pred.panoptic == 0).all()
        assert pred.panoptic.shape == (5, 6)
        expected_map, _ = previous_merge(
            probs,
            scores,
            classes,
            merge=merge,
            object_threshold=0.01,
            overlap_threshold=0.7,
            min_area=256,
            mask_threshold=0.5,
        )
        np.testing.assert_array_equal(pred.panoptic, expected_map)


@pytest.mark.parametrize("merge", ["reference", "maskformer"])
def test_call_equals_whole_canvas_merge_of_all_proposals(merge: str) -> None:
    # __call__ drops proposals that cannot win before upsampling; the result must equal the
    # previous merge of ALL K upsampled proposals, on canvases that need a crop
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 10, 8, 8, generator=g) * 3
    scores = torch.rand(2, 10, generator=g)
    classes = torch.randint(0, len(CATEGORIES), (2, 10), generator=g)
    out = MaskConverOutput(
        center_logits=(torch.zeros(2, 5, 8, 8),),
        mask_logits=logits,
        scores=scores,
        classes=classes,
        center_indices=torch.zeros(2, 10, dtype=torch.int64),
    )
    valid, sizes = [(32, 24), (20, 32)], [(45, 33), (30, 48)]
    kw = {"object_threshold": 0.3, "overlap_threshold": 0.6, "min_area": 5, "mask_threshold": 0.5}
    preds = processor(merge, **kw)(out, valid, sizes, (32, 32))
    for b, pred in enumerate(preds):
        probs = rescale_logits(logits[b], (32, 32), valid[b], sizes[b]).sigmoid()
        expected_map, expected_segments = previous_merge(
            probs,
            scores[b],
            classes[b],
            merge=merge,
            **kw,  # type: ignore[arg-type]
        )
        np.testing.assert_array_equal(pred.panoptic, expected_map)
        got = [(s.id, s.category_id, s.score, s.isthing, s.area) for s in pred.segments]
        assert got == expected_segments
    assert sum(len(p.segments) for p in preds) > 0  # the case is not trivially empty


def test_descending_order_is_a_stable_argsort() -> None:
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        values = (torch.rand(int(torch.randint(1, 40, (1,), generator=g)), generator=g) * 4).floor()
        expected = values.argsort(descending=True, stable=True)
        assert torch.equal(descending_order(values), expected)


class _Core(nn.Module):
    """Sorted proposals -> the merge core on a fixed canvas, as an export would run it."""

    def __init__(self, merge: str, canvas: tuple[int, int]) -> None:
        super().__init__()
        self.merge = merge
        self.canvas = canvas
        self.register_buffer("usable", torch.tensor([c != -1 for c in CATEGORIES]))

    def forward(self, logits: Tensor, scores: Tensor, classes: Tensor) -> tuple[Tensor, ...]:
        proposals = sort_proposals(scores, classes, self.usable, 0.01)
        ordered = logits[proposals.order]

        def probabilities(start: int, stop: int) -> Tensor:
            up = F.interpolate(
                ordered[None, start:stop], size=self.canvas, mode="bilinear", align_corners=False
            )
            return up[0].sigmoid()

        core = merge_proposals(
            probabilities,
            proposals,
            self.canvas,
            mode=self.merge,
            min_area=2,
            chunk=3,  # type: ignore[arg-type]
        )
        return tuple(core)


def _inputs(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(7, 8, 10, generator=g) * 3
    scores = torch.rand(7, generator=g)
    scores[3] = scores[5]  # a tie
    classes = torch.randint(0, len(CATEGORIES), (7,), generator=g)
    return logits, scores, classes


@pytest.mark.parametrize("merge", ["reference", "maskformer"])
def test_core_traces_with_static_shapes(merge: str) -> None:
    core = _Core(merge, (16, 20)).eval()
    logits, scores, classes = _inputs()
    eager = core(logits, scores, classes)
    traced = torch.jit.trace(core, (logits, scores, classes))
    # the trace recorded no host round trip: other values (same shapes) give the eager result
    other = _inputs(1)
    for a, b in zip(traced(*other), core(*other), strict=True):
        assert torch.equal(a, b)
    owner, keep, cls, score, area = eager
    assert owner.shape == (16, 20) and owner.dtype == torch.int64
    assert keep.shape == cls.shape == score.shape == area.shape == (7,)
    assert int(owner.min()) >= -1 and int(owner.max()) < 7
    assert torch.equal(area, torch.bincount(owner[owner >= 0], minlength=7))


@pytest.mark.parametrize("merge", ["reference", "maskformer"])
def test_core_exports_to_onnx_and_onnxruntime_agrees(merge: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ort = pytest.importorskip("onnxruntime")
    core = _Core(merge, (16, 20)).eval()
    logits, scores, classes = _inputs()
    path = tmp_path / "core.onnx"
    torch.onnx.export(
        core,
        (logits, scores, classes),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["logits", "scores", "classes"],
        output_names=["owner", "keep", "classes_out", "scores_out", "areas"],
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed in (0, 1, 2):
        inputs = _inputs(seed)
        got = session.run(
            None, dict(zip(["logits", "scores", "classes"], (t.numpy() for t in inputs)))
        )
        for a, b in zip(got, core(*inputs), strict=True):
            np.testing.assert_array_equal(a, b.numpy())
