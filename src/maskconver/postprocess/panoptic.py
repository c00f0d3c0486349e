"""Panoptic merge: K scored mask proposals -> one panoptic id map per image.

``merge="reference"`` is the official generator (reference section 4.3) on the original-resolution
canvas: every pixel goes to ``argmax_k prob_k * score_k``; a proposal is kept iff its won area
exceeds ``min_area`` and ``overlap_threshold`` times its own area (prob > 0.5); pixels of dropped
proposals become void; whole won regions form the segments. ``merge="maskformer"`` follows
MaskFormer's panoptic inference: segments are won pixels with prob >= ``mask_threshold``.
Thing proposals become separate segments; stuff proposals of one class merge into one segment.

Two layers:

* the fixed-shape tensor core (``postprocess.merge``): owner index per pixel and per-proposal
  keep / class / score / area; traceable, exportable;
* ``number_segments``: the small Python step that numbers the kept proposals (things
  separately, stuff merged per class) and builds ``segments_info``; every backend shares it.

``PanopticPostProcessor`` runs both. Proposals that cannot win (below the object threshold) are
dropped before their masks are upsampled to the output canvas; the result is exactly the merge of
all K proposals.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver.data.types import SegmentInfo
from maskconver.outputs import PanopticPrediction
from maskconver.postprocess.merge import (
    DEFAULT_CHUNK,
    MergeCore,
    ProbabilityFn,
    SortedProposals,
    merge_proposals,
    sort_proposals,
)
from maskconver.postprocess.peaks import HARD_SIGMOID_OFFSET, HARD_SIGMOID_SCALE, hard_sigmoid

UNUSED_CLASS = -1  # class_to_category entry of an index that maps to no category
# a chunk of upsampled proposals holds at most this many values (64 MB in float32), so a
# 12-megapixel canvas is merged one proposal at a time and memory grows with H x W only
MAX_CHUNK_VALUES = 1 << 24


def chunk_for(chunk: int, canvas: Sequence[int]) -> int:
    """Proposals per chunk on ``canvas``: at most ``chunk`` and ``MAX_CHUNK_VALUES`` values."""
    return max(1, min(chunk, MAX_CHUNK_VALUES // max(1, int(canvas[0]) * int(canvas[1]))))


class Proposals(Protocol):
    """What the merge reads from a model's output (``MaskConverOutput`` has these fields).

    Attributes:
        mask_logits: ``[B, K, hm, wm]`` mask logits covering the padded network input.
        scores: ``[B, K]`` proposal scores.
        classes: ``[B, K]`` int64 class indices.
    """

    @property
    def mask_logits(self) -> Tensor:
        """``[B, K, hm, wm]``."""
        ...

    @property
    def scores(self) -> Tensor:
        """``[B, K]``."""
        ...

    @property
    def classes(self) -> Tensor:
        """``[B, K]``."""
        ...


def enlarge(prediction: PanopticPrediction, size: tuple[int, int]) -> PanopticPrediction:
    """Nearest-neighbour enlargement of a panoptic map to ``size`` (areas recounted)."""
    panoptic = prediction.panoptic
    rows = (np.arange(size[0]) * panoptic.shape[0] // size[0]).astype(np.intp)
    cols = (np.arange(size[1]) * panoptic.shape[1] // size[1]).astype(np.intp)
    big = panoptic[rows[:, None], cols[None, :]]
    areas = np.bincount(
        big.ravel(), minlength=max((s.id for s in prediction.segments), default=0) + 1
    )
    segments = [dataclasses.replace(s, area=int(areas[s.id])) for s in prediction.segments]
    return PanopticPrediction(panoptic=big, segments=[s for s in segments if s.area > 0])


def working_size(size: tuple[int, int], cap: int) -> tuple[int, int]:
    """``size``, or a smaller one within ``cap`` pixels (aspect kept, with a warning); 0: no cap."""
    height, width = size
    if cap <= 0 or height * width <= cap:
        return size
    scale = math.sqrt(cap / (height * width))
    working = (max(1, int(height * scale)), max(1, int(width * scale)))
    warnings.warn(
        f"a {height}x{width} image exceeds postprocess.max_canvas_pixels={cap}: merged at "
        f"{working[0]}x{working[1]} and enlarged to its size",
        stacklevel=4,
    )
    return working


def canvas_size(
    input_size: tuple[int, int], valid_size: tuple[int, int], output_size: tuple[int, int]
) -> tuple[int, int]:
    """Size the whole padded input maps to when its valid part is resized to ``output_size``."""
    (hi, wi), (hv, wv), (ho, wo) = input_size, valid_size, output_size
    if not (0 < hv <= hi and 0 < wv <= wi):
        raise ValueError(f"valid size {valid_size} must lie inside the input size {input_size}")
    return max(ho, math.ceil(hi * ho / hv)), max(wo, math.ceil(wi * wo / wv))


def rescale_logits(
    logits: Tensor,
    input_size: tuple[int, int],
    valid_size: tuple[int, int],
    output_size: tuple[int, int],
) -> Tensor:
    """Resample mask logits onto the original image canvas.

    The padded network input (``input_size``) holds the resized image in its top-left
    ``valid_size`` corner; the image's original size is ``output_size``. The whole padded input is
    mapped to ``ceil(input_size * output / valid)`` pixels with one bilinear resize (half-pixel
    centres) and cropped to ``output_size`` (reference ``rescale_predictions``).

    Args:
        logits: ``[K, hm, wm]`` mask logits covering the padded input.
        input_size: ``(H, W)`` of the padded network input.
        valid_size: ``(h, w)`` of the resized image inside it.
        output_size: ``(H0, W0)`` of the original image.

    Returns:
        ``[K, H0, W0]`` logits.
    """
    canvas = canvas_size(input_size, valid_size, output_size)
    resized = F.interpolate(logits[None], size=canvas, mode="bilinear", align_corners=False)[0]
    return resized[:, : output_size[0], : output_size[1]]


def number_segments(
    core: MergeCore,
    *,
    class_to_category: Sequence[int],
    is_thing_class: Sequence[bool],
    stuff: tuple[np.ndarray, dict[int, float]] | None = None,
) -> PanopticPrediction:
    """Number the kept proposals and paint the id map (the Python step after the tensor core).

    Kept proposals are visited in score order: each thing gets a new segment id, the first stuff
    proposal of a class gets a new id and later stuff proposals of that class join it. Ids run
    1..n; 0 is void.

    Args:
        core: the tensor core's result for one image.
        class_to_category: class index -> dataset category id.
        is_thing_class: class index -> thing (True) or stuff.
        stuff: region-based stuff, ``([H, W] stuff class per pixel or -1, {class: score})``:
            after the proposals, each listed class becomes one segment on its pixels.

    Returns:
        The ``[H, W]`` int32 panoptic map and one ``SegmentInfo`` per id (with score and area).
    """
    keep = core.keep.cpu().numpy()
    classes = core.classes.cpu().numpy()
    scores = core.scores.float().cpu().numpy()
    areas = core.areas.cpu().numpy()
    segment_of = np.zeros(len(keep) + 1, dtype=np.int32)  # proposal -> id; index -1 is void
    segments: list[SegmentInfo] = []
    stuff_segment: dict[int, SegmentInfo] = {}
    for k in np.flatnonzero(keep):
        cls = int(classes[k])
        is_thing = bool(is_thing_class[cls])
        if not is_thing and cls in stuff_segment:
            merged = stuff_segment[cls]
            segment_of[k] = merged.id
            merged.area += int(areas[k])
            continue
        seg = SegmentInfo(
            id=len(segments) + 1,
            category_id=int(class_to_category[cls]),
            score=float(scores[k]),
            isthing=is_thing,
            area=int(areas[k]),
        )
        segment_of[k] = seg.id
        segments.append(seg)
        if not is_thing:
            stuff_segment[cls] = seg
    panoptic = segment_of[core.owner.cpu().numpy()]  # owner -1 -> the void entry
    if stuff is not None:
        stuff_map, stuff_scores = stuff
        for cls, score in sorted(stuff_scores.items()):
            region = stuff_map == cls
            seg = SegmentInfo(
                id=len(segments) + 1,
                category_id=int(class_to_category[cls]),
                score=float(score),
                isthing=False,
                area=int(region.sum()),
            )
            panoptic[region] = seg.id
            segments.append(seg)
    return PanopticPrediction(panoptic=panoptic.astype(np.int32, copy=False), segments=segments)


def semantic_stuff(
    logits: Tensor,
    owner: Tensor,
    is_stuff: Tensor,
    *,
    input_size: tuple[int, int],
    valid_size: tuple[int, int],
    output_size: tuple[int, int],
    min_area: int,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[np.ndarray, dict[int, float]]:
    """Region-based stuff: the semantic argmax on the pixels no thing owns.

    Args:
        logits: ``[C, hs, ws]`` semantic logits covering the padded input.
        owner: ``[H, W]`` the merge core's owner map (-1 = not owned by a thing).
        is_stuff: ``[C]`` bool.
        input_size: padded network input ``(H, W)``.
        valid_size: resized image inside it.
        output_size: original ``(H0, W0)`` (= ``owner``'s shape).
        min_area: a stuff class needs more than this many pixels.
        chunk: classes upsampled at a time (running argmax, memory ``chunk x H x W``).

    Returns:
        ``([H, W] int64 stuff class or -1, {class: score})`` where the score is the mean
        softmax probability of the class over its low-resolution argmax pixels.
    """
    best = torch.full(output_size, -math.inf, device=logits.device)
    label = torch.zeros(output_size, dtype=torch.int64, device=logits.device)
    for start in range(0, logits.shape[0], chunk):
        part = rescale_logits(logits[start : start + chunk], input_size, valid_size, output_size)
        value, index = part.max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        label = torch.where(better, index + start, label)
    free = (owner < 0) & is_stuff.to(label.device)[label]
    stuff_map = torch.where(free, label, torch.full_like(label, -1)).cpu().numpy()
    probs = logits.softmax(0)
    low_label = probs.argmax(0)
    scores: dict[int, float] = {}
    for cls in np.unique(stuff_map[stuff_map >= 0]).tolist():
        if int((stuff_map == cls).sum()) <= min_area:
            stuff_map[stuff_map == cls] = -1
            continue
        at = low_label == cls
        scores[int(cls)] = (
            float(probs[cls][at].mean()) if bool(at.any()) else float(probs[cls].max())
        )
    return stuff_map, scores


class PanopticPostProcessor:
    """Turns model proposals into ``PanopticPrediction`` at each image's original size.

    Args:
        class_to_category: model class index -> dataset category id (-1 for unused indices;
            proposals of those classes are dropped).
        is_thing_class: per class index, True for thing classes.
        merge: ``"reference"`` or ``"maskformer"``.
        object_threshold: proposals need ``score > object_threshold``.
        overlap_threshold: reference: keep iff won > overlap * own area; maskformer: keep iff
            won / own area >= overlap.
        min_area: reference: keep iff won area > min_area (pixels on the original canvas).
        mask_threshold: maskformer: segment pixels need prob >= mask_threshold.
        hard_sigmoid: probabilities by ``relu6(x + 3) / 6`` instead of the sigmoid.
        chunk: proposals upsampled to the canvas at a time (memory ``chunk x H x W``).
        stuff_from_semantic: region-based stuff (MaskConver Table 7): proposals of stuff
            classes are ignored and stuff comes from the outputs' ``semantic_logits`` argmax on
            the pixels no thing owns (a class needs more than ``min_area`` pixels).
        max_canvas_pixels: cap of the merge canvas (0: none). A larger image is merged on a
            canvas scaled to fit the cap and its map is enlarged (nearest) to the image size,
            with a warning, so memory stays bounded; below the cap the merge is exact.
    """

    def __init__(
        self,
        *,
        class_to_category: Sequence[int],
        is_thing_class: Sequence[bool],
        merge: Literal["reference", "maskformer"] = "reference",
        object_threshold: float = 0.01,
        overlap_threshold: float = 0.7,
        min_area: int = 256,
        mask_threshold: float = 0.5,
        hard_sigmoid: bool = False,
        chunk: int = DEFAULT_CHUNK,
        stuff_from_semantic: bool = False,
        max_canvas_pixels: int = 0,
    ) -> None:
        if len(class_to_category) != len(is_thing_class):
            raise ValueError(
                f"class_to_category ({len(class_to_category)}) and is_thing_class "
                f"({len(is_thing_class)}) must have one entry per class"
            )
        if merge not in ("reference", "maskformer"):
            raise ValueError(f"merge must be 'reference' or 'maskformer', got {merge!r}")
        self.class_to_category = [int(c) for c in class_to_category]
        self.is_thing_class = [bool(t) for t in is_thing_class]
        self.stuff_from_semantic = stuff_from_semantic
        self.max_canvas_pixels = max_canvas_pixels
        self.class_usable = torch.tensor(
            [
                c != UNUSED_CLASS and (t or not stuff_from_semantic)
                for c, t in zip(self.class_to_category, self.is_thing_class, strict=True)
            ]
        )
        self.is_stuff_class = torch.tensor(
            [
                c != UNUSED_CLASS and not t
                for c, t in zip(self.class_to_category, self.is_thing_class)
            ]
        )
        self.merge = merge
        self.object_threshold = object_threshold
        self.overlap_threshold = overlap_threshold
        self.min_area = min_area
        self.mask_threshold = mask_threshold
        self.hard_sigmoid = hard_sigmoid
        self.chunk = chunk

    def probabilities(self, logits: Tensor) -> Tensor:
        """Mask probabilities of logits (sigmoid, or the hard sigmoid)."""
        return hard_sigmoid(logits) if self.hard_sigmoid else logits.sigmoid()

    def probabilities_(self, logits: Tensor) -> Tensor:
        """``probabilities`` computed in place in ``logits`` (returned)."""
        if self.hard_sigmoid:  # relu6(x + 3) / 6
            return logits.add_(HARD_SIGMOID_OFFSET).clamp_(0.0, 6.0).div_(HARD_SIGMOID_SCALE)
        return logits.sigmoid_()

    @torch.no_grad()
    def __call__(
        self,
        outputs: Proposals,
        valid_sizes: Sequence[tuple[int, int]],
        output_sizes: Sequence[tuple[int, int]],
        input_size: tuple[int, int],
    ) -> list[PanopticPrediction]:
        """Merge every image of the batch.

        Args:
            outputs: the model output (``mask_logits [B, K, hm, wm]``, ``scores``/``classes``
                ``[B, K]``).
            valid_sizes: per image ``(h, w)`` of the resized image inside the padded input.
            output_sizes: per image original ``(H0, W0)``.
            input_size: ``(H, W)`` of the padded network input (``images.shape[-2:]``).

        Returns:
            One ``PanopticPrediction`` per image at its original size.
        """
        batch = outputs.mask_logits.shape[0]
        if len(valid_sizes) != batch or len(output_sizes) != batch:
            raise ValueError(
                f"got {len(valid_sizes)} valid sizes and {len(output_sizes)} output sizes for "
                f"a batch of {batch}"
            )
        hw_in = (int(input_size[0]), int(input_size[1]))
        results = []
        for b in range(batch):
            valid_size = (int(valid_sizes[b][0]), int(valid_sizes[b][1]))
            original = (int(output_sizes[b][0]), int(output_sizes[b][1]))
            output_size = working_size(original, self.max_canvas_pixels)
            sorted_ = self._sorted(outputs.scores[b].float(), outputs.classes[b])
            logits = outputs.mask_logits[b].float()[sorted_.order]  # [n, hm, wm], sorted
            core = self._core(
                self._rescaled(logits, hw_in, valid_size, output_size), sorted_, output_size
            )
            semantic = getattr(outputs, "semantic_logits", None)
            prediction = self.finish(
                core,
                semantic_logits=None if semantic is None else semantic[b],
                input_size=hw_in,
                valid_size=valid_size,
                output_size=output_size,
            )
            results.append(enlarge(prediction, original) if output_size != original else prediction)
        return results

    def finish(
        self,
        core: MergeCore,
        *,
        semantic_logits: Tensor | None = None,
        input_size: tuple[int, int] | None = None,
        valid_size: tuple[int, int] | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> PanopticPrediction:
        """The Python step after the tensor core (any backend's): number segments, add stuff.

        Args:
            core: the merge core's result for one image (from this post-processor, or from an
                exported graph).
            semantic_logits: ``[C, hs, ws]`` for region-based stuff (else unused).
            input_size: padded network input (region-based stuff only).
            valid_size: resized image inside it (region-based stuff only).
            output_size: original image size (region-based stuff only).
        """
        stuff = None
        if self.stuff_from_semantic:
            if semantic_logits is None or input_size is None or valid_size is None:
                raise ValueError(
                    "region-based stuff needs the model's semantic_logits (stuff_mode=region)"
                )
            stuff = semantic_stuff(
                semantic_logits.float(),
                core.owner,
                self.is_stuff_class,
                input_size=input_size,
                valid_size=valid_size,
                output_size=output_size or (int(core.owner.shape[0]), int(core.owner.shape[1])),
                min_area=self.min_area,
                chunk=self.chunk,
            )
        return number_segments(
            core,
            class_to_category=self.class_to_category,
            is_thing_class=self.is_thing_class,
            stuff=stuff,
        )

    def _rescaled(
        self,
        logits: Tensor,
        input_size: tuple[int, int],
        valid_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> ProbabilityFn:
        """``(start, stop) -> probabilities`` of sorted low-resolution logits on the canvas."""

        def probabilities(start: int, stop: int) -> Tensor:
            rescaled = rescale_logits(logits[start:stop], input_size, valid_size, output_size)
            return self.probabilities_(rescaled)  # in place: a fresh tensor (memory)

        return probabilities

    def merge_probabilities(
        self, probs: Tensor, scores: Tensor, classes: Tensor
    ) -> PanopticPrediction:
        """Merge one image's proposals given their probabilities on the output canvas.

        Args:
            probs: ``[K, H, W]`` mask probabilities on the output canvas.
            scores: ``[K]`` proposal scores.
            classes: ``[K]`` class indices.

        Returns:
            The panoptic map (ids 1..n, 0 void) and its segments.
        """
        sorted_ = self._sorted(scores.float(), classes)
        chosen = probs.float()[sorted_.order]
        core = self._core(
            lambda start, stop: chosen[start:stop], sorted_, (probs.shape[-2], probs.shape[-1])
        )
        return number_segments(
            core, class_to_category=self.class_to_category, is_thing_class=self.is_thing_class
        )

    def _sorted(self, scores: Tensor, classes: Tensor) -> SortedProposals:
        """Sorted proposals, cut after the last valid one (the rest can never own a pixel).

        Invalid proposals score 0 and sort after every valid one with a positive score, so the
        kept prefix is usually exactly the valid proposals; a zero-scored invalid proposal that
        sorts before a valid one (possible only with ``object_threshold < 0``) stays, because it
        wins the pixels where every product is 0 in the full merge too.
        """
        num_classes = len(self.class_to_category)
        if classes.numel() and (int(classes.max()) >= num_classes or int(classes.min()) < 0):
            raise ValueError(
                f"proposal classes must be in [0, {num_classes}), got {classes.tolist()}"
            )
        full = sort_proposals(scores, classes, self.class_usable, self.object_threshold)
        valid_positions = torch.nonzero(full.valid).flatten()
        count = int(valid_positions[-1]) + 1 if valid_positions.numel() else 0
        return SortedProposals(*(t[:count] for t in full))

    def _core(
        self,
        probabilities: ProbabilityFn,
        proposals: SortedProposals,
        canvas: tuple[int, int],
    ) -> MergeCore:
        return merge_proposals(
            probabilities,
            proposals,
            (int(canvas[0]), int(canvas[1])),
            mode=self.merge,
            overlap_threshold=self.overlap_threshold,
            min_area=self.min_area,
            mask_threshold=self.mask_threshold,
            chunk=chunk_for(self.chunk, canvas),
        )
