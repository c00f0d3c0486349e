"""The fast merge: the exact merge's result without any ``[K, H, W]`` tensor on the canvas.

The exact merge (``merge.merge_proposals``) upsamples every proposal's mask logits bilinearly to
the output canvas and takes the per-pixel argmax of ``prob x score`` over all K. Here the K-wide
work stays at mask resolution ``[K, h, w]`` and a fixed handful of maps is upsampled:

* **Owner map by candidates.** Bilinear upsampling computes a canvas pixel from the four mask
  pixels (corners) of its cell. Each cell gets ``CANDIDATES`` proposals: from the best
  ``RUNNERS_UP`` at each corner, those with the largest margin over the pool's best at 3 x 3
  probe points of the cell (every corner's winner first). Their logits are interpolated to
  each canvas pixel exactly as the resize does, and the best candidate owns it (ties to the
  better-scored proposal, as one argmax). The result differs from the exact merge only where a
  proposal wins inside a cell but is not among its candidates: rare (``docs/merge.md``).
  Canvas-size work: ``CANDIDATES`` interpolated maps, independent of K.
* **Won areas** are counted on that owner map (one ``bincount``).
* **Own areas** (``prob > 0.5`` or ``>= mask_threshold``, i.e. logit thresholds) are estimated
  per bilinear cell at mask resolution (``coverage``); whether a proposal owns any pixel at all
  is decided on the canvas pixels nearest the mask pixels (``sampled_peaks``); and the
  ``BORDERLINE`` proposals whose keep decision lies nearest the overlap threshold get their
  own areas counted exactly on the canvas (``recount_borderline``).

Eager mode processes the canvas in row tiles of bounded memory; a trace runs one tile. The
keep rule and the owner map come from the same ``merge.finish_merge`` as the exact merge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver.postprocess.cells import (
    at_corners,
    bilinear_axis,
    cell_pixels,
    corner_offsets,
    counts_per_cell,
    coverage,
    lerp,
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
CANDIDATES = 5  # proposals compared at each canvas pixel
RUNNERS_UP = 3  # best proposals per mask pixel that may become a cell's candidates
# canvas values one eager row tile holds at most (64 MB in float32, as canvas.MAX_CHUNK_VALUES)
MAX_TILE_VALUES = 1 << 24
TILE_MAPS = 24  # canvas-size maps alive per tile row (interpolated corners, values, indices)
# the 3 x 3 probe points of a cell (t_y, t_x in 0, 1/2, 1) as weights of its 4 corners
PROBE_WEIGHTS = torch.tensor(
    [
        [(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx]
        for ty in (0.0, 0.5, 1.0)
        for tx in (0.0, 0.5, 1.0)
    ]
)


def leaders(value: Tensor, count: int) -> Tensor:
    """``[count, h, w]`` int64 indices of the ``count`` largest of ``value [m, h, w]`` per pixel.

    Repeated maxima (``max`` then masking the winner) instead of ``topk`` over the leading
    dimension, which is several times slower on CPUs; ties go to the lower index first.
    """
    rest = value
    found = []
    for _ in range(count):
        index = rest.argmax(0)
        found.append(index)
        if len(found) < count:
            rest = rest.scatter(0, index[None], -math.inf)
    return torch.stack(found)


def best_of(val: Tensor, prob: Tensor, *, want_prob: bool) -> tuple[Tensor, Tensor | None]:
    """The slot with the largest ``val`` per pixel and, if wanted, its ``prob``.

    The first maximum wins; slots hold ascending proposal ids, so ties go to the better-scored
    proposal, as in the exact merge's argmax. A trace uses one ArgMax over the slots (one graph
    node); eager torch compares slot by slot (its argmax over a leading dimension is several
    times slower on CPUs).

    Args:
        val: ``[q, t, W]`` ``prob x score`` of each slot's proposal.
        prob: ``[q, t, W]`` its probability.
        want_prob: return the winner's probability too (the maskformer merge).

    Returns:
        ``[t, W]`` int64 slot and ``[t, W]`` probability (or None).
    """
    if tracing():
        slot = val.argmax(0)
        return slot, prob.gather(0, slot[None])[0] if want_prob else None
    best, slot, best_prob = val[0], torch.zeros_like(val[0], dtype=torch.long), prob[0]
    for q in range(1, int(val.shape[0])):  # strictly greater replaces: ties stay lower
        better = val[q] > best
        best = torch.where(better, val[q], best)
        slot = slot.masked_fill(better, q)
        if want_prob:
            best_prob = torch.where(better, prob[q], best_prob)
    return slot, best_prob if want_prob else None


def won_areas(
    winner: Tensor | None,
    best_slot: Tensor,
    candidates: Tensor,
    cells: tuple[Tensor, Tensor],
    num: int,
) -> Tensor:
    """``[num]`` int64 canvas pixels each proposal wins.

    Eager: one ``bincount`` of the owner map. A trace counts each cell's pixels per candidate
    slot (``counts_per_cell``) and adds them to the slots' proposals: a scatter of ``q x h x w``
    counts instead of one per canvas pixel, which onnxruntime adds one at a time.

    Args:
        winner: ``[H, W]`` int64 owner map (eager; a trace may pass None).
        best_slot: ``[H, W]`` int64 winning slot of each pixel (traced: the whole canvas).
        candidates: ``[q, h, w]`` int64 proposals of each cell's slots.
        cells: ``(rows [H], cols [W])`` cell of each canvas row / column.
        num: K.
    """
    if winner is not None and not tracing():
        return bin_count(winner, None, num)
    rows, cols = cells
    slots = torch.arange(candidates.shape[0], device=best_slot.device)
    onehot = (best_slot[None] == slots[:, None, None]).to(torch.float32)  # [q, H, W]
    size = size_of(candidates, 1), size_of(candidates, 2)
    counts = counts_per_cell(onehot, rows, cols, size).round().long()  # [q, h, w]
    zeros = torch.zeros(num, dtype=torch.int64, device=best_slot.device)
    return zeros.scatter_add(0, candidates.flatten(), counts.flatten())


def cell_candidates(
    logits: Tensor,
    value: Tensor,
    scores: Tensor,
    probability: Callable[[Tensor], Tensor],
    offsets: Tensor,
) -> Tensor:
    """The ``CANDIDATES`` proposals of each bilinear cell that may own its canvas pixels.

    The pool is the best ``RUNNERS_UP`` proposals (by ``prob x score``) at each of the cell's
    four corners. Each is ranked by its largest margin ``value - best value of the pool`` over
    the cell's 3 x 3 probe points (corners, edge midpoints, centre: bilinear as on the canvas),
    repeats last; a corner's winner has margin 0 there, so every corner winner ranks first. The
    chosen ones come in ascending proposal index (so ties go to the better-scored proposal).

    Args:
        logits: ``[m, h, w]`` mask logits of the sorted proposals.
        value: ``[m, h, w]`` their ``prob x score``.
        scores: ``[m]`` their scores.
        probability: elementwise logits -> probabilities.
        offsets: ``[4, h, w]`` from ``corner_offsets``.

    Returns:
        ``[CANDIDATES, h, w]`` int64 proposal indices, ascending (repeated where a cell has
        fewer distinct ones).
    """
    best = leaders(value, min(RUNNERS_UP, int(value.shape[0])))  # [n, h, w]
    layer = torch.arange(best.shape[0], device=value.device)[:, None, None]
    pool = at_corners(best, layer.expand_as(best), offsets).flatten(0, 1)  # [4 n, h, w]
    corner_logits = at_corners(logits, pool, offsets)  # [4 r, 4 n, h, w]
    weights = PROBE_WEIGHTS.to(logits.device)  # [9, 4]: bilinear weights at the probes
    probes = (weights @ corner_logits.flatten(1)).reshape((-1, *pool.shape))  # [9, 4 n, h, w]
    probe_value = probability(probes) * scores[pool]
    margin = (probe_value - probe_value.amax(1, keepdim=True)).amax(0)  # [4 n, h, w]
    same = pool[:, None] == pool[None, :]  # [4 n, 4 n, h, w]: slot i holds slot j's proposal
    slot = torch.arange(pool.shape[0], device=pool.device)
    earlier = slot[:, None] > slot[None, :]
    repeated = (same & earlier[:, :, None, None]).any(1)  # seen in an earlier slot: ranks last
    margin = torch.where(repeated, torch.full_like(margin, -math.inf), margin)
    slots = margin.topk(min(CANDIDATES, int(pool.shape[0])), dim=0).indices
    chosen = pool.gather(0, slots)
    return chosen.topk(int(chosen.shape[0]), dim=0, largest=False).values


def recount_borderline(
    own: Tensor,
    won: Tensor,
    logits: Tensor,
    canvas: tuple[Any, Any],
    output: tuple[Any, Any],
    *,
    probability: Callable[[Tensor], Tensor],
    above: Callable[[Tensor], Tensor],
    overlap_threshold: float,
    usable: Tensor,
) -> Tensor:
    """Own areas, counted exactly on the canvas for the ``BORDERLINE`` closest keep decisions.

    The keep rule compares won and own areas (``won > overlap x own`` or ``won / own >=
    overlap``); where the estimated own area puts a proposal within a few percent of that
    threshold, the estimate's error could flip it, so those ``BORDERLINE`` proposals (the
    smallest ``|won - overlap x own| / own`` among the usable ones) have their masks upsampled
    and counted as the exact merge does: ``BORDERLINE`` maps on the canvas, not K.

    Args:
        own: ``[m]`` int64 estimated own areas.
        won: ``[m]`` int64 won areas.
        logits: ``[m, h, w]``.
        canvas: ``(Hc, Wc)`` the whole mask map is resized to; ``output``: the crop.
        output: ``(H, W)`` of the merge canvas.
        probability: elementwise logits -> probabilities.
        above: probabilities -> bool, the own-area test (``> 0.5`` or ``>= mask_threshold``).
        overlap_threshold: of the keep rule.
        usable: ``[m]`` bool: proposals whose keep decision depends on the own area.

    Returns:
        ``[m]`` int64 own areas.
    """
    count = min(BORDERLINE, int(own.shape[0]))
    gap = (won.float() - overlap_threshold * own.float()).abs() / (own.float() + 1.0)
    gap = torch.where(usable, gap, torch.full_like(gap, math.inf))
    chosen = gap.topk(count, largest=False).indices
    step = count
    if not tracing():  # eager: as many maps on the canvas at a time as MAX_TILE_VALUES holds
        step = max(1, min(count, MAX_TILE_VALUES // max(1, int(output[0]) * int(output[1]))))
    parts = [chosen[i : i + step] for i in range(0, count, step)]
    counts = []
    for part in parts:
        up = F.interpolate(logits[part][None], size=canvas, mode="bilinear", align_corners=False)
        inside = above(probability(up))[:, :, : output[0], : output[1]].flatten(2)[0]
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
    eager = not tracing()
    if num == 0 or logits.shape[0] == 0:  # nothing to merge: every pixel is void
        height, width = int(output[0]), int(output[1])
        void = torch.full((height, width), -1, dtype=torch.int64, device=device)
        zeros = torch.zeros_like(proposals.order)
        return MergeCore(void, proposals.valid & False, proposals.classes, proposals.scores, zeros)
    logits = logits.float()
    h, w = size_of(logits, 1), size_of(logits, 2)
    scores = proposals.scores[: logits.shape[0]].to(torch.float32)
    value = probability(logits) * scores[:, None, None]
    offsets = corner_offsets(h, w, device)
    candidates = cell_candidates(logits, value, scores, probability, offsets)  # [q, h, w]
    corner_logits = at_corners(logits, candidates, offsets)  # [4 r, q, h, w]
    rows, row_frac = bilinear_axis(h, canvas[0], output[0], device)
    cols, col_frac = bilinear_axis(w, canvas[1], output[1], device)
    # along x at mask rows, then rows per tile: [4 r, q, h, w] -> [q, h, W] top and bottom
    along_x = select_columns(corner_logits, cols)
    top = lerp(along_x[0], along_x[1], col_frac)
    bottom = lerp(along_x[2], along_x[3], col_frac)
    cell_scores = select_columns(proposals.scores.to(torch.float32)[candidates], cols)
    out_h = int(output[0]) if eager else 0
    tile = max(1, MAX_TILE_VALUES // (TILE_MAPS * int(cols.shape[0]))) if eager else 0
    winners, winner_probs, slot_maps = [], [], []
    for start in range(0, out_h, tile) if eager else [0]:
        part = slice(start, start + tile) if eager else slice(None)
        tile_rows, tile_frac = rows[part], row_frac[part]
        upper, lower = top.index_select(1, tile_rows), bottom.index_select(1, tile_rows)
        prob = probability(lerp(upper, lower, tile_frac[None, :, None]))  # [q, t, W]
        val = prob * cell_scores.index_select(1, tile_rows)
        best_slot, best_prob = best_of(val, prob, want_prob=mode == "maskformer")
        cell = tile_rows[:, None] * w + cols[None, :]  # [t, W] flat cell of each pixel
        flat = best_slot * (h * w) + cell  # [t, W] (slot, cell) of each pixel, flat
        slot_maps.append((best_slot, flat))
        if eager or mode == "maskformer":
            winners.append(candidates.reshape(-1)[flat])
        if best_prob is not None:
            winner_probs.append(best_prob)
    # traced, reference mode: no owner map before the keep decisions (``owner_by_slot``)
    winner = None if not winners else winners[0] if len(winners) == 1 else torch.cat(winners)
    winner_prob = None
    if mode == "maskformer":
        winner_prob = winner_probs[0] if len(winner_probs) == 1 else torch.cat(winner_probs)
    level = ORIGINAL_AREA_PROB if mode == "reference" else mask_threshold
    fraction = coverage(logits, logit_threshold(level))  # [m, h, w]
    row_pixels = cell_pixels(rows, h)
    col_pixels = cell_pixels(cols, w)
    pixels = (row_pixels[:, None] * col_pixels[None, :]).reshape(-1, 1)  # [h w, 1]
    own = (fraction.flatten(1) @ pixels)[:, 0].round().long()
    peaks = sampled_peaks(logits, ((rows, row_frac), (cols, col_frac)), canvas)
    threshold = logit_threshold(level)
    owns = peaks > threshold if mode == "reference" else peaks >= threshold
    own = torch.where(owns, own.clamp(min=1), torch.zeros_like(own))
    won_area = won_areas(winner, slot_maps[0][0], candidates, (rows, cols), num)
    enough = won_area[: own.shape[0]] > (min_area if mode == "reference" else 0)
    own = recount_borderline(
        own,
        won_area[: own.shape[0]],
        logits,
        canvas,
        output,
        probability=probability,
        above=(lambda p: p > level) if mode == "reference" else (lambda p: p >= level),
        overlap_threshold=overlap_threshold,
        usable=proposals.valid[: own.shape[0]] & enough,
    )
    own_area = fill_to(own, num)
    owner_of = None
    if winner is None:  # traced reference mode: one gather of the kept candidates per pixel

        def owner_of(keep: Tensor) -> Tensor:
            kept = torch.where(keep[candidates], candidates, torch.full_like(candidates, -1))
            return kept.reshape(-1)[slot_maps[0][1]]

    return finish_merge(
        winner,
        winner_prob,
        own_area,
        proposals,
        won_area=won_area,
        owner_of=owner_of,
        mode=mode,
        overlap_threshold=overlap_threshold,
        min_area=min_area,
        mask_threshold=mask_threshold,
    )
