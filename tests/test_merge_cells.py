"""The fast merge's parts against brute force: settled cells, candidates, counts, the graph.

* ``candidates.settle``: a settled cell's leader is the exact merge's winner (the argmax over
  all K of the resized ``prob x score``) at every canvas pixel of the cell;
* ``candidates.leaders``: equals ``topk`` with ties to the lower index;
* ``cells``: spans, per-cell counts, column selection and the sampled peaks equal their
  definitions computed on the resized maps;
* ``merge_fast.recount_borderline``: counts on the canvas, and leaves a proposal whose keep
  decision does not depend on its own area alone;
* the merge-only graph in onnxruntime equals eager inference when no cell, cells in every row,
  or a few cells are contested (the contested rows have a dynamic size in the graph), in both
  merge modes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_merge_fast import CATEGORIES, GEOMETRIES, OPEN, THINGS, _smooth_logits
from torch import Tensor, nn

from maskconver.meta.maskconver.postprocess import PanopticPostProcessor
from maskconver.postprocess.candidates import leaders, settle
from maskconver.postprocess.canvas import canvas_of
from maskconver.postprocess.cells import (
    bilinear_axis,
    cell_spans,
    corner_offsets,
    counts_per_cell,
    sampled_peaks,
    select_columns,
)
from maskconver.postprocess.merge_fast import recount_borderline


def _canvas(geometry: tuple) -> tuple[tuple[int, int], tuple[int, int]]:
    _, input_size, valid_size, output_size = geometry
    return canvas_of(input_size, valid_size, output_size), output_size


def _resized(logits: Tensor, canvas: tuple[int, int], output: tuple[int, int]) -> Tensor:
    up = F.interpolate(logits[None], size=canvas, mode="bilinear", align_corners=False)[0]
    return up[:, : output[0], : output[1]]


@pytest.mark.parametrize("index", range(len(GEOMETRIES)))
def test_a_settled_cells_leader_wins_every_pixel_of_the_cell(index: int) -> None:
    geometry = GEOMETRIES[index]
    canvas, output = _canvas(geometry)
    seen = 0
    for seed in range(3):
        logits, scores, _ = _smooth_logits(12, geometry[0], 10 * index + seed)
        h, w = logits.shape[1:]
        value = torch.sigmoid(logits.flatten(1)) * scores[:, None]
        lead, settled = settle(value, corner_offsets(h, w, torch.device("cpu")).flatten(1))
        exact = (torch.sigmoid(_resized(logits, canvas, output)) * scores[:, None, None]).argmax(0)
        rows, _ = bilinear_axis(h, canvas[0], output[0], torch.device("cpu"))
        cols, _ = bilinear_axis(w, canvas[1], output[1], torch.device("cpu"))
        cell = rows[:, None] * w + cols[None, :]  # [H, W]
        inside = settled[cell]
        assert torch.equal(exact[inside], lead[cell][inside])
        seen += int(inside.sum())
    assert seen > 0  # the smooth fields settle most cells


def _top3(row: list[float]) -> list[int]:
    return sorted(range(len(row)), key=lambda k: (-row[k], k))[:3]


def test_leaders_are_topk_with_ties_to_the_lower_index() -> None:
    g = torch.Generator().manual_seed(0)
    value = torch.randint(0, 4, (5, 7, 9), generator=g).float()  # many ties
    found = leaders(value, 3)
    order = torch.tensor([_top3(row) for row in value.view(-1, 9).tolist()])
    assert torch.equal(found, order.view(5, 7, 3))


def test_cell_spans_cover_the_output_once() -> None:
    for geometry in GEOMETRIES:
        canvas, output = _canvas(geometry)
        h = geometry[0][0]
        rows, _ = bilinear_axis(h, canvas[0], output[0], torch.device("cpu"))
        first, count = cell_spans(rows, h)
        assert int(count.sum()) == output[0]
        for cell in range(h):
            span = rows[first[cell] : first[cell] + count[cell]]
            assert bool((span == cell).all()) and int((rows == cell).sum()) == int(count[cell])


def test_counts_per_cell_equal_a_bincount_per_cell() -> None:
    g = torch.Generator().manual_seed(1)
    for geometry in GEOMETRIES:
        canvas, output = _canvas(geometry)
        h, w = geometry[0]
        rows, _ = bilinear_axis(h, canvas[0], output[0], torch.device("cpu"))
        cols, _ = bilinear_axis(w, canvas[1], output[1], torch.device("cpu"))
        onehot = (torch.rand(3, *output, generator=g) > 0.5).float()
        counts = counts_per_cell(onehot, rows, cols, (h, w))
        cell = (rows[:, None] * w + cols[None, :]).flatten()
        expected = torch.stack(
            [torch.bincount(cell, weights=m.flatten(), minlength=h * w) for m in onehot]
        ).view(3, h, w)
        assert torch.equal(counts, expected.float())


def test_select_columns_traced_equals_index_select() -> None:
    maps = torch.randn(2, 3, 6)
    index = torch.tensor([0, 0, 5, 2, 2, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(lambda m, i: select_columns(m, i), (maps, index))
    assert torch.equal(traced(maps, index), maps.index_select(-1, index))


def test_sampled_peaks_evaluate_the_pixels_nearest_the_mask_pixels() -> None:
    for geometry in GEOMETRIES:
        canvas, output = _canvas(geometry)
        logits, _, _ = _smooth_logits(4, geometry[0], 5)
        h, w = logits.shape[1:]
        axes = tuple(
            bilinear_axis(n, c, o, torch.device("cpu"))
            for n, c, o in zip((h, w), canvas, output, strict=True)
        )
        peaks = sampled_peaks(logits, axes, canvas)  # type: ignore[arg-type]
        resized = _resized(logits, canvas, output)
        near = []
        for size, full, out in zip((h, w), canvas, output, strict=True):
            pixel = ((torch.arange(size) + 0.5) * full / size - 0.5).round().long()
            near.append(pixel.clamp(0, out - 1))
        expected = resized[:, near[0]][:, :, near[1]].flatten(1).amax(1)
        torch.testing.assert_close(peaks, expected, rtol=0, atol=1e-5)


def test_recount_counts_on_the_canvas_and_skips_made_decisions() -> None:
    geometry = GEOMETRIES[1]
    canvas, output = _canvas(geometry)
    logits, _, _ = _smooth_logits(6, geometry[0], 7)
    exact = (_resized(logits, canvas, output) > 0).flatten(1).sum(1)
    estimate = exact + 5  # off by a few pixels
    won = (0.7 * exact).long()  # every decision on the edge
    usable = torch.tensor([True, True, False, True, False, False])
    for chosen in (usable, torch.zeros(6, dtype=torch.bool)):  # <= BORDERLINE usable: all
        own = recount_borderline(
            estimate,
            won,
            logits,
            canvas,
            output,
            above=lambda x: x > 0,
            overlap_threshold=0.7,
            usable=chosen,
        )
        assert torch.equal(own[chosen], exact[chosen])
        assert torch.equal(own[~chosen], estimate[~chosen])


class _MergeGraph(nn.Module):
    """The merge core alone on a ``canvas`` (sizes traced as tensors, as in an export)."""

    def __init__(self, post: PanopticPostProcessor) -> None:
        super().__init__()
        self.post = post

    def forward(self, logits: Tensor, scores: Tensor, classes: Tensor, size: Tensor) -> tuple:
        sizes = (size[0], size[1])
        return tuple(
            self.post.core(
                logits, scores, classes, input_size=sizes, valid_size=sizes, output_size=sizes
            )
        )


def _regime(name: str) -> tuple[Tensor, Tensor, Tensor]:
    """Logits where no cell, many cells in every row or a few cells are contested (16 x 20)."""
    logits, scores, classes = _smooth_logits(12, (16, 20), 21)
    if name == "settled":  # one proposal far ahead everywhere
        logits[0] = 20.0
        scores[0] = 1.0
    elif name == "contested":  # flat, close masks: every row of cells has a contested cell
        logits = logits * 0.05
        scores = 0.5 + scores * 0.1
    else:  # an upper and a lower half: contested only in the rows of cells at their border
        logits[:] = -20.0
        logits[0, :8], logits[1, 8:] = 20.0, 20.0
        scores[:2] = torch.tensor([0.9, 0.8])
    return logits, scores, classes


@pytest.mark.parametrize("regime", ["settled", "contested", "border"])
@pytest.mark.parametrize("merge", ["reference", "maskformer"])
def test_the_merge_graph_equals_eager_in_every_regime(
    regime: str, merge: str, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime", reason="the ONNX check needs the [onnx] extra")
    post = PanopticPostProcessor(
        class_to_category=CATEGORIES,
        is_thing_class=THINGS,
        algorithm="fast",
        merge=merge,  # type: ignore[arg-type]
        **OPEN,  # type: ignore[arg-type]
    )
    logits, scores, classes = _regime(regime)
    value = torch.sigmoid(logits.flatten(1)) * scores[:, None]
    order = scores.argsort(descending=True)
    _, settled = settle(value[order], corner_offsets(16, 20, torch.device("cpu")).flatten(1))
    contested_rows = int((~settled).view(16, 20).any(1).sum())
    assert contested_rows == {"settled": 0, "contested": 16, "border": 1}[regime]
    size = torch.tensor([64, 80])
    path = tmp_path / "merge.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _MergeGraph(post),
            (logits, scores, classes, size),
            str(path),
            opset_version=17,
            dynamo=False,
            input_names=["logits", "scores", "classes", "size"],
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for other in (size, torch.tensor([61, 83])):  # and another canvas than the traced one
        feed = {"logits": logits.numpy(), "scores": scores.numpy()}
        feed |= {"classes": classes.numpy(), "size": other.numpy()}
        got = session.run(None, feed)
        sizes = (int(other[0]), int(other[1]))
        with torch.no_grad():
            eager = post.core(
                logits, scores, classes, input_size=sizes, valid_size=sizes, output_size=sizes
            )
        for name, graph, expected in zip(eager._fields, got, eager, strict=True):
            assert torch.equal(torch.from_numpy(graph), expected), (regime, merge, name)
