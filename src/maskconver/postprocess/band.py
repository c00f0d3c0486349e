"""The contested rows of cells, evaluated pixel by pixel (the fast merge's canvas step).

Every row of cells that holds a contested cell (``candidates.settle``) is evaluated on its
canvas rows: each of its cells gets ``CANDIDATES`` proposals (``candidates.cell_candidates``),
interpolated to each canvas pixel exactly as the resize does (along x at the mask rows, then the
canvas rows), and the best one owns the pixel (ties to the better-scored proposal, as one
argmax). Whole rows of cells keep the work in contiguous rows: gathers of rows, a MatMul for the
columns (``cells.select_columns``), no per-pixel gather or scatter, which onnxruntime runs one
element at a time. Eager mode evaluates the rows in tiles of bounded memory; a trace in one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from maskconver.postprocess.candidates import cell_candidates
from maskconver.postprocess.cells import counts_per_cell, lerp, select_columns
from maskconver.postprocess.merge import tracing

# canvas values one eager row tile holds at most (64 MB in float32, as canvas.MAX_CHUNK_VALUES)
MAX_TILE_VALUES = 1 << 24
TILE_MAPS = 24  # canvas-size maps alive per tile row (interpolated corners, values, indices)


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


class Band(NamedTuple):
    """The contested rows of cells, evaluated pixel by pixel on their canvas rows.

    Attributes:
        rows: ``[H']`` int64 canvas rows in the band (ascending).
        cell_rows: ``[H']`` int64 each one's row of cells, counted inside the band.
        candidates: ``[q, h', w]`` int64 proposals of the band's cells.
        slot: ``[H', W]`` int64 winning candidate slot of each pixel.
        flat: ``[H', W]`` int64 its (slot, cell) flat index into ``candidates``.
        winner: ``[H', W]`` int64 the winning proposal (eager and maskformer; else None).
        winner_prob: ``[H', W]`` its probability (maskformer; else None).
    """

    rows: Tensor
    cell_rows: Tensor
    candidates: Tensor
    slot: Tensor
    flat: Tensor
    winner: Tensor | None
    winner_prob: Tensor | None


def contested_band(
    flat: Tensor,
    value: Tensor,
    scores: Tensor,
    all_scores: Tensor,
    corners: Tensor,
    in_band: Tensor,
    axes: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]],
    width: Any,
    *,
    probability: Callable[[Tensor], Tensor],
    want_winner: bool,
    want_prob: bool,
) -> Band:
    """Evaluate the canvas rows of the contested rows of cells, pixel by pixel.

    Args:
        flat: ``[m, h w]`` mask logits.
        value: ``[m, h w]`` their ``prob x score``.
        scores: ``[m]`` their scores.
        all_scores: ``[K]`` every sorted proposal's score.
        corners: ``[4, h w]`` flat corners of every cell.
        in_band: ``[h]`` bool: the contested rows of cells.
        axes: ``((rows, row_frac), (cols, col_frac))`` from ``bilinear_axis``.
        width: ``w`` of the mask map.
        probability: elementwise logits -> probabilities.
        want_winner: also gather each pixel's proposal (eager, maskformer).
        want_prob: also the winner's probability (maskformer).
    """
    (rows, row_frac), (cols, col_frac) = axes
    device = flat.device
    band = in_band.nonzero()[:, 0]  # [h']
    cells = (band[:, None] * width + torch.arange(width, device=device)[None, :]).reshape(-1)
    at = corners[:, cells]  # [4, h' w]
    candidates = cell_candidates(flat, value, scores, probability, at)  # [q, h' w]
    slots = int(candidates.shape[0])
    corner_logits = flat.reshape(-1)[candidates[None] * flat.shape[1] + at[:, None]]
    corner_logits = corner_logits.reshape(len(at), slots, -1, width)  # [4, q, h', w]
    candidates = candidates.reshape(slots, -1, width)  # [q, h', w]
    # along x at the band's mask rows, then its canvas rows per tile: [q, h', W] top and rise
    along_x = select_columns(corner_logits, cols)
    top = lerp(along_x[0], along_x[1], col_frac)
    rise = lerp(along_x[2], along_x[3], col_frac) - top  # bottom - top: no Sub on the canvas
    cell_scores = select_columns(all_scores[candidates], cols)
    canvas_rows = in_band[rows].nonzero()[:, 0]  # [H']
    cell_rows = (in_band.long().cumsum(0) - 1)[rows[canvas_rows]]  # [H'] row inside the band
    eager = not tracing()
    total = int(canvas_rows.shape[0]) if eager else 0
    tile = max(1, MAX_TILE_VALUES // (TILE_MAPS * int(cols.shape[0]))) if eager else 0
    pieces: dict[str, list[Tensor]] = {"slot": [], "index": [], "winner": [], "prob": []}
    plane = candidates.shape[1] * candidates.shape[2]
    for start in range(0, total, tile) if eager else [0]:
        part = slice(start, start + tile) if eager else slice(None)
        tile_rows = cell_rows[part]
        upper, step = top.index_select(1, tile_rows), rise.index_select(1, tile_rows)
        prob = probability(upper + row_frac[canvas_rows[part]][None, :, None] * step)
        val = prob * cell_scores.index_select(1, tile_rows)  # [q, t, W]
        slot, best_prob = best_of(val, prob, want_prob=want_prob)
        index = slot * plane + (tile_rows[:, None] * width + cols[None, :])  # [t, W]
        pieces["slot"].append(slot)
        pieces["index"].append(index)
        if want_winner:
            pieces["winner"].append(candidates.reshape(-1)[index])
        if best_prob is not None:
            pieces["prob"].append(best_prob)

    def joined(name: str, dtype: torch.dtype) -> Tensor:
        maps = pieces[name]
        if not maps:  # eager, no contested row
            return torch.zeros((0, int(cols.shape[0])), dtype=dtype, device=device)
        return maps[0] if len(maps) == 1 else torch.cat(maps)

    return Band(
        canvas_rows,
        cell_rows,
        candidates,
        joined("slot", torch.int64),
        joined("index", torch.int64),
        joined("winner", torch.int64) if want_winner else None,
        joined("prob", torch.float32) if want_prob else None,
    )


def band_counts(band: Band, cols: Tensor, counts: Tensor, only: Tensor | None) -> Tensor:
    """``counts`` plus the band's pixels (``only`` those where set) per winning proposal.

    Each cell's pixels per candidate slot (``cells.counts_per_cell``), added to the slots'
    proposals: a scatter of ``q x h' x w`` counts instead of one per canvas pixel.
    """
    candidates = band.candidates
    slots = torch.arange(candidates.shape[0], device=candidates.device)[:, None, None]
    onehot = band.slot[None] == slots  # [q, H', W]
    if only is not None:
        onehot = onehot & only[None]
    size = (candidates.shape[1], candidates.shape[2])
    per_cell = counts_per_cell(onehot.to(torch.float32), band.cell_rows, cols, size)
    return counts.scatter_add(0, candidates.flatten(), per_cell.round().long().flatten())
