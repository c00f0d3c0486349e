"""The tensor core of the panoptic merge: fixed shapes, no host round trips, traceable.

Given K proposals (mask probabilities on the output canvas, scores, classes) the core returns,
for one image, tensors of static shape:

* ``owner [H, W]`` int64: the proposal (index into the score-sorted order) whose segment holds
  the pixel, ``-1`` for void;
* ``keep [K]`` bool, ``classes [K]``, ``scores [K]`` (sorted by descending score, stable) and
  ``areas [K]`` int64 (pixels each kept proposal owns).

The merge semantics (reference section 4.3, MaskFormer for ``"maskformer"``):

* a proposal is valid iff ``score > object_threshold`` and its class maps to a category;
  invalid proposals get score 0;
* every pixel is won by ``argmax_k prob_k * score_k`` (ties go to the better-scored proposal);
* ``"reference"``: keep iff won area > ``min_area`` and > ``overlap_threshold`` x own area
  (``prob > 0.5``); a kept proposal owns all its won pixels;
* ``"maskformer"``: keep iff won & confident (``prob >= mask_threshold``) area > 0 and
  won / own area (``prob >= mask_threshold``) >= ``overlap_threshold``; it owns its won and
  confident pixels.

The argmax runs over chunks of ``chunk`` proposals with a running maximum (strictly greater
replaces, so ties keep the earlier proposal exactly as one argmax would): memory grows with
``chunk x H x W``, not ``K x H x W``. The chunk loop runs ``ceil(K / chunk)`` times, a count fixed
by the input shape, so tracing unrolls it. Numbering segments (things separately, stuff merged
per class) and building ``segments_info`` is the small Python step in ``postprocess/segments.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

ORIGINAL_AREA_PROB = 0.5  # reference: a proposal's own area is #pixels with prob > 0.5
DEFAULT_CHUNK = 8  # proposals upsampled at a time (measured fastest at 256 and 640 px)

MergeMode = Literal["reference", "maskformer"]
# (start, stop) -> probabilities [stop - start, H, W] of sorted proposals start..stop-1
ProbabilityFn = Callable[[int, int], Tensor]


class MergeCore(NamedTuple):
    """Fixed-shape result of the merge for one image (proposals in score-sorted order).

    Attributes:
        owner: ``[H, W]`` int64 proposal index owning each pixel, -1 for void.
        keep: ``[K]`` bool, True for proposals that became (part of) a segment.
        classes: ``[K]`` int64 class indices.
        scores: ``[K]`` float scores (0 for invalid proposals), descending.
        areas: ``[K]`` int64 pixels owned by each proposal (0 unless kept).
    """

    owner: Tensor
    keep: Tensor
    classes: Tensor
    scores: Tensor
    areas: Tensor


class SortedProposals(NamedTuple):
    """Proposals sorted by descending score (stable), invalid ones scored 0.

    Attributes:
        order: ``[K]`` int64 original index of each sorted proposal.
        scores: ``[K]`` scores, 0 where invalid.
        classes: ``[K]`` int64 class indices.
        valid: ``[K]`` bool.
    """

    order: Tensor
    scores: Tensor
    classes: Tensor
    valid: Tensor


def descending_order(values: Tensor) -> Tensor:
    """Stable descending argsort of a ``[K]`` vector (ties keep their index order).

    Computed from pairwise comparisons (``rank_i = #{j: v_j > v_i} + #{j < i: v_j == v_i}``) so
    it exports to ONNX (``torch.argsort(stable=True)`` does not); ``K x K`` work, which is
    nothing for K proposals.

    Returns:
        ``[K]`` int64 indices: ``values[order]`` is sorted descending.
    """
    num = values.shape[0]
    index = torch.arange(num, device=values.device)
    greater = values[None, :] > values[:, None]  # [i, j]: v_j > v_i
    tied_before = (values[None, :] == values[:, None]) & (index[None, :] < index[:, None])
    rank = (greater | tied_before).sum(1)
    return torch.zeros_like(index).scatter(0, rank, index)


def sort_proposals(
    scores: Tensor, classes: Tensor, class_usable: Tensor, object_threshold: float
) -> SortedProposals:
    """Zero the scores of invalid proposals and sort by descending score (stable).

    Args:
        scores: ``[K]`` proposal scores.
        classes: ``[K]`` int64 class indices in ``[0, C)``.
        class_usable: ``[C]`` bool, False for class indices that map to no category.
        object_threshold: valid iff ``score > object_threshold`` (and the class is usable).
    """
    classes = classes.long()
    valid = (scores > object_threshold) & class_usable.to(classes.device)[classes]
    zeroed = torch.where(valid, scores, torch.zeros_like(scores))
    order = descending_order(zeroed)
    return SortedProposals(order, zeroed[order], classes[order], valid[order])


def _count(mask: Tensor) -> Tensor:
    """``[c, H, W]`` bool -> ``[c]`` int64 number of True pixels."""
    return mask.flatten(1).sum(1)


def valid_prefix(
    proposals: SortedProposals, rows: Tensor, *, eager: bool
) -> tuple[SortedProposals, Tensor]:
    """The sorted proposals up to the last valid one, and their ``rows`` (``[K, ...]``) in order.

    The rest score 0 and can never own a pixel, so merging the prefix is exactly merging all K.
    A zero-scored invalid proposal sorted before a valid one (only with ``object_threshold <
    0``) stays, as it wins where all products are 0. Eager mode cuts the proposals too (only
    the prefix's rows are copied); a trace keeps all K proposals (static shapes) and at least
    one row (the count is dynamic there).

    Returns:
        ``(proposals, ordered_rows)``.
    """
    position = torch.arange(1, proposals.valid.shape[0] + 1, device=proposals.valid.device)
    count = torch.where(proposals.valid, position, torch.zeros_like(position)).max(0)[0]
    if eager:
        kept = int(count)
        proposals = SortedProposals(*(t[:kept] for t in proposals))
        return proposals, rows[proposals.order]
    return proposals, rows[proposals.order][: count.clamp(min=1)]


def tracing() -> bool:
    """Inside ``torch.jit.trace`` / ONNX export (only traceable ops), not eager."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def bin_count(index: Tensor, weights: Tensor | None, num_bins: int) -> Tensor:
    """Static-shape ``bincount``: ``[num_bins]`` int64 count of each ``index`` value.

    ``weights`` (bool, same shape, or None for all) selects the pixels counted. Eager mode
    uses ``torch.bincount`` (no full-size int64 temporaries); a trace uses ``scatter_add``,
    which ONNX has.
    """
    if not tracing():
        chosen = index.flatten() if weights is None else index[weights]
        return torch.bincount(chosen, minlength=num_bins)[:num_bins]
    counts = torch.zeros(num_bins, dtype=torch.int64, device=index.device)
    ones = torch.ones_like(index) if weights is None else weights.long()
    return counts.scatter_add(0, index.flatten(), ones.flatten())


def fill_to(values: Tensor, size: int) -> Tensor:
    """``values`` ``[m]`` (``m <= size``) placed in a zero ``[size]`` vector (static shape)."""
    index = torch.arange(values.shape[0], device=values.device)
    return torch.zeros(size, dtype=values.dtype, device=values.device).scatter(0, index, values)


def merge_proposals(
    probabilities: ProbabilityFn,
    proposals: SortedProposals,
    canvas: tuple[int, int],
    *,
    mode: MergeMode = "reference",
    overlap_threshold: float = 0.7,
    min_area: int = 256,
    mask_threshold: float = 0.5,
    chunk: int = DEFAULT_CHUNK,
) -> MergeCore:
    """The panoptic merge of one image's sorted proposals (see the module docstring).

    Args:
        probabilities: ``(start, stop) -> [m, H, W]`` mask probabilities of the sorted
            proposals ``start..start+m-1`` on the output canvas, ``m = stop - start`` -- or
            fewer when the caller dropped the tail of invalid proposals (an exported graph
            upsamples only the valid ones; the missing ones can never win a pixel).
        proposals: the output of ``sort_proposals``.
        canvas: ``(H, W)`` of the output canvas (only used when there is no proposal: the
            maps' own size is the canvas otherwise).
        mode: ``"reference"`` or ``"maskformer"``.
        overlap_threshold: see the module docstring.
        min_area: reference mode: keep iff won area > ``min_area``.
        mask_threshold: maskformer mode: confident pixels have ``prob >= mask_threshold``.
        chunk: proposals processed at a time (>= 1).

    Returns:
        ``MergeCore`` with ``owner [H, W]`` and per-proposal ``[K]`` tensors.
    """
    if mode not in ("reference", "maskformer"):
        raise ValueError(f"merge mode must be 'reference' or 'maskformer', got {mode!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    scores, valid = proposals.scores, proposals.valid
    num = scores.shape[0]
    device = scores.device
    height, width = canvas
    if num == 0:  # nothing to merge: every pixel is void
        void = torch.full((height, width), -1, dtype=torch.int64, device=device)
        return MergeCore(void, valid, proposals.classes, scores, torch.zeros_like(proposals.order))
    eager = not tracing()  # eager: in-place updates, so full-size temporaries stay few
    own_parts = []
    for start in range(0, num, chunk):
        stop = min(start + chunk, num)
        probs = probabilities(start, stop).to(scores.dtype)  # [c, H, W]
        if start == 0:  # the canvas comes from the maps themselves (dynamic in an export)
            best = torch.full_like(probs[0], -1.0)
            winner = torch.zeros_like(probs[0], dtype=torch.int64)
            winner_prob = torch.zeros_like(probs[0]) if mode == "maskformer" else best
        if mode == "reference":
            own_parts.append(_count(probs > ORIGINAL_AREA_PROB))
        else:
            own_parts.append(_count(probs >= mask_threshold))
        chunk_scores = scores[start : start + probs.shape[0]]
        if eager and probs.shape[0] == 1 and mode == "reference":
            value = probs[0] * chunk_scores[0]  # one proposal: no argmax, no index map
            better = value > best
            torch.where(better, value, best, out=best)
            winner.masked_fill_(better, start)
            continue
        value, index = (probs * chunk_scores[:, None, None]).max(dim=0)
        better = value > best
        if mode == "maskformer":
            if eager:
                prob_at = probs.gather(0, index[None])[0]
            else:  # a one-hot sum: OpenVINO refuses GatherElements with fewer indices
                slots = torch.arange(probs.shape[0], device=probs.device)[:, None, None]
                prob_at = (probs * (slots == index[None]).to(probs.dtype)).sum(0)
            winner_prob = torch.where(better, prob_at, winner_prob)
        if eager:
            torch.where(better, value, best, out=best)
            torch.where(better, index.add_(start), winner, out=winner)
        else:
            best = torch.where(better, value, best)
            winner = torch.where(better, index + start, winner)
    own_area = fill_to(torch.cat(own_parts), num)
    return finish_merge(
        winner,
        winner_prob if mode == "maskformer" else None,
        own_area,
        proposals,
        mode=mode,
        overlap_threshold=overlap_threshold,
        min_area=min_area,
        mask_threshold=mask_threshold,
    )


def finish_merge(
    winner: Tensor | None,
    winner_prob: Tensor | None,
    own_area: Tensor,
    proposals: SortedProposals,
    *,
    won_area: Tensor | None = None,
    segment_area: Tensor | None = None,
    owner_of: Callable[[Tensor], Tensor] | None = None,
    mode: MergeMode,
    overlap_threshold: float,
    min_area: int,
    mask_threshold: float,
) -> MergeCore:
    """The keep rule and the owner map from the per-pixel winner (shared by every algorithm).

    Args:
        winner: ``[H, W]`` int64 index of the proposal with the largest ``prob x score``
            (consumed: eager mode reuses its memory for the owner map).
        winner_prob: ``[H, W]`` the winner's probability (``"maskformer"``; None otherwise).
        own_area: ``[K]`` int64 pixels with ``prob > 0.5`` (reference) or
            ``prob >= mask_threshold`` (maskformer) of each sorted proposal.
        proposals: the output of ``sort_proposals`` (``K`` rows).
        won_area: ``[K]`` int64 pixels each proposal wins, when the caller counted them.
        segment_area: maskformer mode with ``owner_of``: ``[K]`` int64 won and confident
            pixels of each proposal.
        owner_of: instead of ``winner`` (None): ``keep [K]`` -> the owner map ``[H, W]`` (the
            caller builds it from the keep decisions directly; needs ``won_area``, and in
            maskformer mode ``segment_area``).
        mode: ``"reference"`` or ``"maskformer"``.
        overlap_threshold: see the module docstring.
        min_area: reference mode: keep iff won area > ``min_area``.
        mask_threshold: maskformer mode: confident pixels have ``prob >= mask_threshold``.

    Returns:
        ``MergeCore`` with ``owner [H, W]`` and per-proposal ``[K]`` tensors.
    """
    scores, valid = proposals.scores, proposals.valid
    num = scores.shape[0]
    eager = not tracing()
    if won_area is None:
        if winner is None:
            raise ValueError("finish_merge needs the winner map or the won areas")
        won_area = bin_count(winner, None, num)
    if mode == "reference":
        keep = (
            valid
            & (won_area > min_area)
            & (own_area > 0)
            & (won_area.to(scores.dtype) > overlap_threshold * own_area.to(scores.dtype))
        )
        segment_area = won_area  # a kept proposal owns all its won pixels
        areas = torch.where(keep, segment_area, torch.zeros_like(segment_area))
        if owner_of is not None:
            return MergeCore(owner_of(keep), keep, proposals.classes, scores, areas)
        if winner is None:
            raise ValueError("finish_merge needs the winner map or owner_of")
        in_segment = keep[winner]
    else:
        if owner_of is None and winner is None:
            raise ValueError("the maskformer merge needs the winner map")
        if segment_area is None:
            if winner is None or winner_prob is None:
                raise ValueError("the maskformer merge needs the winners' probabilities")
            segment_area = bin_count(winner, winner_prob >= mask_threshold, num)
        ratio = won_area.to(scores.dtype) / own_area.clamp(min=1).to(scores.dtype)
        keep = valid & (segment_area > 0) & (own_area > 0) & (ratio >= overlap_threshold)
        areas = torch.where(keep, segment_area, torch.zeros_like(segment_area))  # no 2nd count
        if owner_of is not None:
            return MergeCore(owner_of(keep), keep, proposals.classes, scores, areas)
        if winner is None or winner_prob is None:
            raise ValueError("the maskformer merge needs the winners' probabilities")
        in_segment = keep[winner] & (winner_prob >= mask_threshold)
    if eager:
        owner = winner.masked_fill_(~in_segment, -1)  # winner is not needed any more
    else:
        owner = torch.where(in_segment, winner, torch.full_like(winner, -1))
    return MergeCore(owner, keep, proposals.classes, scores, areas)
