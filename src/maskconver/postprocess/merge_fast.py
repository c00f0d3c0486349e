"""The fast merge: the exact merge's result, with canvas work only where cells are contested.

The exact merge (``merge.merge_proposals``) upsamples every proposal's mask logits bilinearly to
the output canvas and takes the per-pixel argmax of ``prob x score`` over all K. A bilinear
resize computes each canvas pixel from the four mask pixels (corners) of its cell, and between
them every proposal's value stays within its corners' smallest and largest. So:

* **Settled cells** (``candidates.settle``): where one proposal's smallest corner value beats
  every other proposal's largest, it wins all the cell's pixels, exactly; nothing is evaluated
  on the canvas there.
* **Contested rows**: every row of cells that holds a contested cell is evaluated on its
  canvas rows. Each of its cells gets ``CANDIDATES`` proposals (``candidates.cell_candidates``),
  interpolated to each canvas pixel exactly as the resize does, and the best one owns the pixel
  (ties to the better-scored proposal, as one argmax). The result differs from the exact merge
  only where a proposal wins a pixel without being among its cell's candidates. Whole rows of
  cells keep the canvas work in contiguous rows (gathers of rows, a MatMul for the columns).
* **Won areas** are the pixel counts of the settled cells outside those rows plus, inside
  them, each cell's count per candidate (``cells.counts_per_cell``).
* **Own areas** (``prob > 0.5`` or ``>= mask_threshold``, i.e. logit thresholds) are estimated
  per bilinear cell at mask resolution (``coverage``); whether a proposal owns any pixel at all
  is decided on the canvas pixels nearest the mask pixels (``sampled_peaks``); and the
  ``BORDERLINE`` proposals whose keep decision lies nearest the overlap threshold get their
  own areas counted exactly on the canvas (``recount_borderline``).
* The owner map is the settled rows' cell owners spread over their pixels (one gather) and the
  contested rows' winners, put in row order.

The canvas work follows the rows of contested cells (the segments' boundaries), never K. Eager
mode evaluates the contested rows in tiles of bounded memory; a trace runs one tile. The keep
rule is ``merge.finish_merge``'s, shared with the exact merge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver.postprocess.band import MAX_TILE_VALUES, TILE_MAPS, band_counts, contested_band
from maskconver.postprocess.candidates import CANDIDATES, settle
from maskconver.postprocess.cells import (
    bilinear_axis,
    cell_spans,
    corner_offsets,
    coverage,
    sampled_peaks,
    select_columns,
    size_of,
)
from maskconver.postprocess.merge import (
    ORIGINAL_AREA_PROB,
    MergeCore,
    MergeMode,
    SortedProposals,
    bin_count,
    fill_to,
    finish_merge,
    tracing,
)

BORDERLINE = 4  # proposals nearest the keep threshold whose own area is counted on the canvas
# logit margin of a settled cell's confidence (maskformer): above float rounding of a resize
LOGIT_MARGIN = 1e-5


def add_counts(counts: Tensor, index: Tensor, amounts: Tensor) -> Tensor:
    """``counts`` plus ``amounts`` added at ``index`` (int64, any length)."""
    return counts.scatter_add(0, index, amounts.to(counts.dtype))


def recount_borderline(
    own: Tensor,
    won: Tensor,
    logits: Tensor,
    canvas: tuple[Any, Any],
    output: tuple[Any, Any],
    *,
    above: Callable[[Tensor], Tensor],
    overlap_threshold: float,
    usable: Tensor,
) -> Tensor:
    """Own areas, counted exactly on the canvas for the ``BORDERLINE`` closest keep decisions.

    The keep rule compares won and own areas (``won > overlap x own`` or ``won / own >=
    overlap``); where the estimated own area puts a proposal within a few percent of that
    threshold, the estimate's error could flip it, so those ``BORDERLINE`` proposals (the
    smallest ``|won - overlap x own| / own`` among the usable ones) have their masks upsampled
    and counted as the exact merge does: at most ``BORDERLINE`` maps on the canvas, not K, and
    none for a proposal whose keep decision does not depend on its own area.

    Args:
        own: ``[m]`` int64 estimated own areas.
        won: ``[m]`` int64 won areas.
        logits: ``[m, h, w]``.
        canvas: ``(Hc, Wc)`` the whole mask map is resized to; ``output``: the crop.
        output: ``(H, W)`` of the merge canvas.
        above: logits -> bool, the own-area test (``prob > 0.5`` or ``prob >=
            mask_threshold`` as a test of the logit: no probabilities on the canvas).
        overlap_threshold: of the keep rule.
        usable: ``[m]`` bool: proposals whose keep decision depends on the own area.

    Returns:
        ``[m]`` int64 own areas.
    """
    count = min(BORDERLINE, int(own.shape[0]))
    gap = (won.float() - overlap_threshold * own.float()).abs() / (own.float() + 1.0)
    gap = torch.where(usable, gap, torch.full_like(gap, math.inf))
    chosen = gap.topk(count, largest=False).indices
    chosen = chosen[usable[chosen]]  # an unusable proposal's keep decision is made already
    parts = [chosen]  # a trace: one piece of 0 to BORDERLINE maps
    if not tracing():  # eager: as many maps on the canvas at a time as MAX_TILE_VALUES holds
        step = max(1, min(count, MAX_TILE_VALUES // max(1, int(output[0]) * int(output[1]))))
        parts = [chosen[i : i + step] for i in range(0, int(chosen.shape[0]), step)]
        if not parts:
            return own
    counts = []
    for part in parts:
        up = F.interpolate(logits[part][None], size=canvas, mode="bilinear", align_corners=False)
        inside = above(up)[:, :, : output[0], : output[1]].flatten(2)[0]
        if tracing():  # a float ReduceSum: onnxruntime's int64 one is several times slower
            counts.append(inside.to(torch.float32).sum(1).round().long())
        else:
            counts.append(inside.sum(1))
    return own.scatter(0, chosen, torch.cat(counts))


def merge_proposals_fast(
    logits: Tensor,
    proposals: SortedProposals,
    canvas: tuple[Any, Any],
    output: tuple[Any, Any],
    *,
    probability: Callable[[Tensor], Tensor],
    logit_threshold: Callable[[float], float],
    mode: MergeMode = "reference",
    overlap_threshold: float = 0.7,
    min_area: int = 256,
    mask_threshold: float = 0.5,
) -> MergeCore:
    """The merge of one image's sorted proposals from their mask-resolution logits.

    The semantics are ``merge.merge_proposals``'s on the maps ``probability(resize(logits))``
    (bilinear to ``canvas``, cropped to ``output``); see the module docstring for how it is
    computed and where it can differ.

    Args:
        logits: ``[m, h, w]`` mask logits of the sorted proposals ``0..m-1`` (``m <= K``: a
            caller may drop the tail of invalid proposals, which can never win a pixel).
        proposals: the output of ``sort_proposals`` (``K`` rows).
        canvas: ``(Hc, Wc)`` the whole mask map is resized to (ints, or 0-d tensors traced).
        output: ``(H, W)`` of the merge canvas, the top-left crop of ``canvas``.
        probability: elementwise logits -> probabilities (sigmoid or hard sigmoid).
        logit_threshold: probability -> the logit where ``probability`` reaches it.
        mode: ``"reference"`` or ``"maskformer"``.
        overlap_threshold: see ``merge.merge_proposals``.
        min_area: reference mode: keep iff won area > ``min_area``.
        mask_threshold: maskformer mode: confident pixels have ``prob >= mask_threshold``.

    Returns:
        ``MergeCore`` with ``owner [H, W]`` and per-proposal ``[K]`` tensors.
    """
    if mode not in ("reference", "maskformer"):
        raise ValueError(f"merge mode must be 'reference' or 'maskformer', got {mode!r}")
    num = proposals.scores.shape[0]
    device = logits.device
    if num == 0 or logits.shape[0] == 0:  # nothing to merge: every pixel is void
        height, width = int(output[0]), int(output[1])
        void = torch.full((height, width), -1, dtype=torch.int64, device=device)
        zeros = torch.zeros_like(proposals.order)
        return MergeCore(void, proposals.valid & False, proposals.classes, proposals.scores, zeros)
    logits = logits.float()
    h, w = size_of(logits, 1), size_of(logits, 2)
    flat = logits.flatten(1)  # [m, h w]
    scores = proposals.scores[: logits.shape[0]].to(torch.float32)
    value = probability(flat) * scores[:, None]
    corners = corner_offsets(h, w, device).flatten(1)  # [4, h w]
    lead, settled = settle(value, corners)  # [h w]
    level = ORIGINAL_AREA_PROB if mode == "reference" else mask_threshold
    threshold = logit_threshold(level)
    confident = None  # maskformer: a settled cell's leader is confident on all its pixels
    if mode == "maskformer":
        at = flat.reshape(-1)[lead[None] * flat.shape[1] + corners]  # [4, h w]
        confident = at.amin(0) >= threshold + LOGIT_MARGIN
        settled = settled & (confident | (at.amax(0) < threshold - LOGIT_MARGIN))
    rows, row_frac = bilinear_axis(h, canvas[0], output[0], device)
    cols, col_frac = bilinear_axis(w, canvas[1], output[1], device)
    axes = ((rows, row_frac), (cols, col_frac))
    spans = (cell_spans(rows, h), cell_spans(cols, w))
    cell_area = (spans[0][1][:, None] * spans[1][1][None, :]).flatten()  # [h w] int64
    # rows of cells with a contested cell: evaluated on the canvas; the rest spread
    open_rows = (~settled).reshape(-1, w).any(1)  # [h]
    outside = (~open_rows)[corners[0] // w]  # [h w]: the cells of settled rows of cells
    band = contested_band(
        flat,
        value,
        scores,
        proposals.scores.to(torch.float32),
        corners,
        open_rows,
        axes,
        w,
        probability=probability,
        want_winner=not tracing() or mode == "maskformer",
        want_prob=mode == "maskformer",
    )
    zeros = torch.zeros(num, dtype=torch.int64, device=device)
    outside_area = cell_area * outside
    sure = None  # maskformer: the band's confident pixels
    if band.winner_prob is not None:
        sure = band.winner_prob >= mask_threshold
    if band.winner is not None and not tracing():  # eager: count the band's winners
        won_area = bin_count(band.winner, None, num)
        band_segment = bin_count(band.winner, sure, num) if sure is not None else None
    else:  # a trace: per cell and candidate slot (a scatter per canvas pixel is slow there)
        won_area = band_counts(band, cols, zeros, None)
        band_segment = band_counts(band, cols, zeros, sure) if sure is not None else None
    won_area = add_counts(won_area, lead, outside_area)
    segment_area = None
    if mode == "maskformer" and confident is not None and band_segment is not None:
        segment_area = add_counts(band_segment, lead, outside_area * confident)
    # own areas: estimated per cell, exact for the closest keep decisions
    fraction = coverage(logits, threshold)  # [m, h, w]
    own = (fraction.flatten(1) @ cell_area.to(torch.float32)[:, None])[:, 0].round().long()
    peaks = sampled_peaks(logits, axes, canvas)
    owns = peaks > threshold if mode == "reference" else peaks >= threshold
    own = torch.where(owns, own.clamp(min=1), torch.zeros_like(own))
    enough = won_area[: own.shape[0]] > (min_area if mode == "reference" else 0)
    own = recount_borderline(
        own,
        won_area[: own.shape[0]],
        logits,
        canvas,
        output,
        above=(lambda x: x > threshold) if mode == "reference" else (lambda x: x >= threshold),
        overlap_threshold=overlap_threshold,
        usable=proposals.valid[: own.shape[0]] & enough,
    )

    def owner_of(keep: Tensor) -> Tensor:
        """The owner map: settled rows' cell owners spread, the band's winners, in row order."""
        table = torch.where(keep, torch.arange(num, device=device), torch.full_like(zeros, -1))
        cell_owner = table[lead]
        if confident is not None:  # maskformer: a settled cell's pixels are all confident or not
            cell_owner = torch.where(confident, cell_owner, torch.full_like(cell_owner, -1))
        band_owner = table[band.candidates].reshape(-1)[band.flat]  # [H', W]
        if sure is not None:
            band_owner = torch.where(sure, band_owner, torch.full_like(band_owner, -1))
        rest = (~open_rows)[rows].nonzero()[:, 0]  # [H''] canvas rows of settled rows of cells
        if not tracing():
            owner = torch.empty((int(output[0]), int(output[1])), dtype=torch.int64, device=device)
            owner[rest] = cell_owner.view(-1, int(w))[rows[rest][:, None], cols[None, :]]
            owner[band.rows] = band_owner
            return owner
        # the cells' rows, then their columns as a MatMul (exact: small integers in float32)
        by_row = cell_owner.reshape(-1, w).index_select(0, rows[rest]).to(torch.float32)
        spread = select_columns(by_row, cols).round().long()  # [H'', W]
        order = torch.cat([rest, band.rows])  # every canvas row once
        position = torch.zeros_like(order).scatter(0, order, torch.ones_like(order).cumsum(0) - 1)
        return torch.cat([spread, band_owner])[position]

    return finish_merge(
        None,
        None,
        fill_to(own, num),
        proposals,
        won_area=won_area,
        segment_area=segment_area,
        owner_of=owner_of,
        mode=mode,
        overlap_threshold=overlap_threshold,
        min_area=min_area,
        mask_threshold=mask_threshold,
    )


__all__ = ["CANDIDATES", "TILE_MAPS", "merge_proposals_fast"]
