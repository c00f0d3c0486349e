"""Panoptic merge: K scored mask proposals -> one panoptic id map per image.

``merge="reference"`` is the official generator (reference section 4.3) on the original-resolution
canvas: every pixel goes to ``argmax_k prob_k * score_k``; a proposal is kept iff its won area
exceeds ``min_area`` and ``overlap_threshold`` times its own area (prob > 0.5); pixels of dropped
proposals become void; whole won regions form the segments. ``merge="maskformer"`` follows
MaskFormer's panoptic inference: segments are won pixels with prob >= ``mask_threshold``.
Thing proposals become separate segments; stuff proposals of one class merge into one segment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver.data.types import SegmentInfo
from maskconver.outputs import MaskConverOutput, PanopticPrediction
from maskconver.postprocess.peaks import hard_sigmoid

ORIGINAL_AREA_PROB = 0.5  # reference: a proposal's own area is #pixels with prob > 0.5
UNUSED_CLASS = -1  # class_to_category entry of an index that maps to no category


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

    Returns:
        ``[K, H0, W0]`` logits.
    """
    (hi, wi), (hv, wv), (ho, wo) = input_size, valid_size, output_size
    if not (0 < hv <= hi and 0 < wv <= wi):
        raise ValueError(f"valid size {valid_size} must lie inside the input size {input_size}")
    canvas = (max(ho, math.ceil(hi * ho / hv)), max(wo, math.ceil(wi * wo / wv)))
    resized = F.interpolate(logits[None], size=canvas, mode="bilinear", align_corners=False)[0]
    return resized[:, :ho, :wo]


class PanopticPostProcessor:
    """Turns ``MaskConverOutput`` into ``PanopticPrediction`` at each image's original size.

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
    ) -> None:
        if len(class_to_category) != len(is_thing_class):
            raise ValueError(
                f"class_to_category ({len(class_to_category)}) and is_thing_class "
                f"({len(is_thing_class)}) must have one entry per class"
            )
        if merge not in ("reference", "maskformer"):
            raise ValueError(f"merge must be 'reference' or 'maskformer', got {merge!r}")
        self.class_to_category = torch.tensor(list(class_to_category), dtype=torch.int64)
        self.is_thing_class = torch.tensor([bool(t) for t in is_thing_class], dtype=torch.bool)
        self.merge = merge
        self.object_threshold = object_threshold
        self.overlap_threshold = overlap_threshold
        self.min_area = min_area
        self.mask_threshold = mask_threshold
        self.hard_sigmoid = hard_sigmoid

    @torch.no_grad()
    def __call__(
        self,
        outputs: MaskConverOutput,
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
        results = []
        for b in range(batch):
            logits = rescale_logits(
                outputs.mask_logits[b].float(),
                tuple(input_size),  # type: ignore[arg-type]
                tuple(valid_sizes[b]),  # type: ignore[arg-type]
                tuple(output_sizes[b]),  # type: ignore[arg-type]
            )
            probs = hard_sigmoid(logits) if self.hard_sigmoid else logits.sigmoid()
            results.append(
                self.merge_probabilities(
                    probs, outputs.scores[b].float(), outputs.classes[b].long()
                )
            )
        return results

    def merge_probabilities(
        self, probs: Tensor, scores: Tensor, classes: Tensor
    ) -> PanopticPrediction:
        """Merge one image's proposals.

        Runs on the device of ``probs``; only the returned map is moved to the CPU.

        Args:
            probs: ``[K, H, W]`` mask probabilities on the output canvas.
            scores: ``[K]`` proposal scores.
            classes: ``[K]`` class indices.

        Returns:
            The panoptic map (ids 1..n, 0 void) and its segments.
        """
        num_classes = len(self.class_to_category)
        if int(classes.max()) >= num_classes or int(classes.min()) < 0:
            raise ValueError(
                f"proposal classes must be in [0, {num_classes}), got {classes.tolist()}"
            )
        usable = self.class_to_category.to(classes.device)[classes] != UNUSED_CLASS
        valid = (scores > self.object_threshold) & usable
        scores = torch.where(valid, scores, torch.zeros_like(scores))
        probs = probs * valid[:, None, None].to(probs.dtype)
        order = scores.argsort(descending=True, stable=True)
        scores, classes, probs, valid = scores[order], classes[order], probs[order], valid[order]

        num = len(scores)
        winner = (probs * scores[:, None, None]).argmax(dim=0)  # [H, W], ties -> best proposal
        won_area = torch.bincount(winner.flatten(), minlength=num)
        if self.merge == "reference":
            own_area = (probs > ORIGINAL_AREA_PROB).flatten(1).sum(1)
            keep = (
                valid
                & (won_area > self.min_area)
                & (own_area > 0)
                & (won_area > self.overlap_threshold * own_area)
            )
            in_segment = keep[winner]
        else:
            own_area = (probs >= self.mask_threshold).flatten(1).sum(1)
            winner_prob = probs.gather(0, winner[None])[0]
            confident = winner_prob >= self.mask_threshold
            seg_area = torch.bincount(winner[confident], minlength=num)
            ratio = won_area.float() / own_area.clamp(min=1).float()
            keep = valid & (seg_area > 0) & (own_area > 0) & (ratio >= self.overlap_threshold)
            in_segment = keep[winner] & confident
        return self._segments(winner, in_segment, keep, scores, classes)

    def _segments(
        self, winner: Tensor, in_segment: Tensor, keep: Tensor, scores: Tensor, classes: Tensor
    ) -> PanopticPrediction:
        """Number kept proposals (things separately, stuff merged per class) and paint the map."""
        segment_ids = [0] * (len(keep) + 1)  # proposal -> segment id; the extra entry is void
        segments: list[SegmentInfo] = []
        stuff_segment: dict[int, int] = {}
        class_list, score_list = classes.tolist(), scores.tolist()
        for k in torch.nonzero(keep).flatten().tolist():
            cls = class_list[k]
            is_thing = bool(self.is_thing_class[cls])
            if not is_thing and cls in stuff_segment:
                segment_ids[k] = stuff_segment[cls]
                continue
            seg_id = len(segments) + 1
            segment_ids[k] = seg_id
            if not is_thing:
                stuff_segment[cls] = seg_id
            segments.append(
                SegmentInfo(
                    id=seg_id,
                    category_id=int(self.class_to_category[cls]),
                    score=score_list[k],
                    isthing=is_thing,
                )
            )
        segment_of = torch.tensor(segment_ids, dtype=torch.int64, device=winner.device)
        pixel_proposal = torch.where(in_segment, winner, torch.full_like(winner, len(keep)))
        panoptic = segment_of[pixel_proposal]
        areas = torch.bincount(panoptic.flatten(), minlength=len(segments) + 1).tolist()
        for seg in segments:
            seg.area = areas[seg.id]
        return PanopticPrediction(
            panoptic=panoptic.cpu().numpy().astype(np.int32), segments=segments
        )
