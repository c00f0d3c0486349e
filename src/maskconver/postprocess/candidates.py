"""Which proposals can own a bilinear cell's canvas pixels (the fast merge's mask-level step).

A bilinear resize (``align_corners=False``) computes each canvas pixel of a cell from the cell's
four corners (mask pixels), and an interpolated logit lies between the corners' smallest and
largest, so ``prob x score`` at every pixel of the cell lies between the corners' smallest and
largest value too (``prob`` is monotone). Two steps use that:

* ``settle``: a cell is *settled* when one proposal's smallest corner value beats every other
  proposal's largest (by a margin above float rounding): it wins every pixel of the cell, the
  argmax over all K proposals, without evaluating a pixel.
* ``cell_candidates``: for the other cells, the ``CANDIDATES`` proposals that may win their
  pixels. The pool is the best ``RUNNERS_UP`` proposals at each of the cell's four corners, each
  ranked by its largest margin ``value - best value of the pool`` over the cell's 3 x 3 probe
  points (corners, edge midpoints, centre: bilinear as on the canvas), repeats last; a corner's
  winner has margin 0 there, so every corner winner ranks first.

Both work on a list of cells (flat indices ``y * w + x`` and their corners' flat offsets), so
the cost follows the number of cells asked about. Proposals are the last axis where the step
reduces over them: onnxruntime reduces over a contiguous axis several times faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

CANDIDATES = 5  # proposals compared at each pixel of an unsettled cell
RUNNERS_UP = 3  # best proposals per mask pixel that may become a cell's candidates
# relative margin a settled cell's leader keeps over every other proposal's largest corner
# value: far above float32 rounding of the resize (a few ulp), far below real differences
SETTLE_MARGIN = 1e-6
# the 3 x 3 probe points of a cell (t_y, t_x in 0, 1/2, 1) as weights of its 4 corners
PROBE_WEIGHTS = torch.tensor(
    [
        [(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx]
        for ty in (0.0, 0.5, 1.0)
        for tx in (0.0, 0.5, 1.0)
    ]
)


def leaders(value: Tensor, count: int) -> Tensor:
    """``[..., count]`` int64 indices of the ``count`` largest of ``value [..., m]``.

    Repeated maxima over the last axis, each winner scattered to ``-inf``, instead of
    ``topk``, which is several times slower on CPUs; ties go to the lower index first.
    """
    rest = value
    found = []
    for _ in range(count):
        index = rest.argmax(-1)
        found.append(index)
        if len(found) < count:
            rest = rest.scatter(-1, index[..., None], -math.inf)
    return torch.stack(found, -1)


def settle(value: Tensor, corners: Tensor) -> tuple[Tensor, Tensor]:
    """Each cell's leader and whether it wins every pixel of the cell.

    Args:
        value: ``[m, h w]`` ``prob x score`` of the proposals at the mask pixels.
        corners: ``[4, n]`` flat mask pixels of each cell's corners (``cells.corner_offsets``).

    Returns:
        ``lead [n]`` int64 (the proposal with the largest smallest-corner value; ties: the
        lower index) and ``settled [n]`` bool.
    """
    by_pixel = value.transpose(0, 1)  # [h w, m]: proposals last
    at = [by_pixel[corner] for corner in corners]  # 4 x [n, m]
    # elementwise over the four corners: onnxruntime reduces over a leading axis slowly
    low = torch.minimum(torch.minimum(at[0], at[1]), torch.minimum(at[2], at[3]))
    high = torch.maximum(torch.maximum(at[0], at[1]), torch.maximum(at[2], at[3]))
    lead = low.argmax(-1)  # [n]
    lead_value = low.gather(-1, lead[:, None])[:, 0]
    others = high.scatter(-1, lead[:, None], -math.inf).amax(-1)  # [n]
    return lead, others < lead_value * (1.0 - SETTLE_MARGIN)


def cell_candidates(
    logits: Tensor,
    value: Tensor,
    scores: Tensor,
    probability: Callable[[Tensor], Tensor],
    corners: Tensor,
) -> Tensor:
    """The ``CANDIDATES`` proposals of each listed cell that may own its canvas pixels.

    Args:
        logits: ``[m, h w]`` mask logits of the sorted proposals.
        value: ``[m, h w]`` their ``prob x score``.
        scores: ``[m]`` their scores.
        probability: elementwise logits -> probabilities.
        corners: ``[4, n]`` flat mask pixels of the cells' corners.

    Returns:
        ``[CANDIDATES, n]`` int64 proposal indices in ascending order, so that an argmax over
        them gives ties to the better-scored proposal (repeated where a cell has fewer
        distinct ones).
    """
    plane = logits.shape[1]
    # the best proposals of the mask pixels that are corners of these cells: [4, n, k]
    listed = corners.reshape(-1)
    needed = torch.zeros_like(value[0], dtype=torch.bool)
    needed = needed.scatter(0, listed, torch.ones_like(listed, dtype=torch.bool))
    pixels = needed.nonzero()[:, 0]  # [p]
    rank = torch.ones_like(pixels).cumsum(0) - 1  # [p]: 0 .. p - 1
    where = torch.zeros_like(value[0], dtype=torch.int64).scatter(0, pixels, rank)  # [h w]
    best = leaders(value.transpose(0, 1)[pixels], min(RUNNERS_UP, int(value.shape[0])))
    best = best[where[corners]]  # [4, n, k]
    # no reshape of a tensor with the cell axis: an export's Reshape reads a 0 there as "keep"
    pool = torch.cat([best[r].transpose(0, 1) for r in range(len(best))])  # [4 k, n]
    corner_logits = logits.reshape(-1)[pool[None] * plane + corners[:, None]]  # [4, 4 k, n]
    weights = PROBE_WEIGHTS.to(logits.device)  # [9, 4]: bilinear weights at the probes
    probes = (corner_logits.permute(1, 2, 0) @ weights.t()).permute(2, 0, 1)  # [9, 4 k, n]
    probe_value = probability(probes) * scores[pool]
    margin = (probe_value - probe_value.amax(1, keepdim=True)).amax(0)  # [4 k, n]
    same = pool[:, None] == pool[None, :]  # [4 k, 4 k, n]: slot i holds slot j's proposal
    slot = torch.arange(pool.shape[0], device=pool.device)
    earlier = slot[:, None] > slot[None, :]
    # seen in an earlier slot: ranks last (a float max: onnxruntime's int64 sum is slower)
    repeated = (same & earlier[:, :, None]).to(torch.float32).amax(1) > 0
    margin = margin.masked_fill(repeated, -math.inf)
    slots = margin.topk(min(CANDIDATES, int(pool.shape[0])), dim=0).indices
    chosen = pool.gather(0, slots)
    return chosen.topk(int(chosen.shape[0]), dim=0, largest=False).values
