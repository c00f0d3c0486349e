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
all K proposals. ``algorithm="fast"`` (the default) computes the same merge without upsampling
all K masks to the canvas (``postprocess.merge_fast``: mask-resolution winners refined at the
canvas, own areas per bilinear cell); ``"exact"`` upsamples every mask (``docs/merge.md``
compares the two).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver.meta.maskconver.peaks import HARD_SIGMOID_OFFSET, HARD_SIGMOID_SCALE, hard_sigmoid
from maskconver.meta.maskconver.stuff import semantic_stuff
from maskconver.postprocess.batch import merge_each
from maskconver.postprocess.canvas import (
    canvas_of,
    chunk_for,
)
from maskconver.postprocess.canvas import rescale_logits as rescale_logits  # the tests' import
from maskconver.postprocess.merge import (
    DEFAULT_CHUNK,
    MergeCore,
    merge_proposals,
    sort_proposals,
    tracing,
    valid_prefix,
)
from maskconver.postprocess.merge_fast import merge_proposals_fast
from maskconver.postprocess.segments import (
    UNUSED_CLASS,
    PanopticPrediction,
    class_tables,
    number_segments,
)

MergeAlgorithm = Literal["exact", "fast"]
MERGE_ALGORITHMS = ("exact", "fast")
# a logit threshold stands for a probability of 0 or 1 (always / never above): beyond any logit
SATURATED_LOGIT = 1e4


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
        algorithm: ``"fast"``: the merge at mask resolution with the owner map refined on the
            canvas (``postprocess.merge_fast``); ``"exact"``: every mask upsampled to the
            canvas (``postprocess.merge``).
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
        algorithm: MergeAlgorithm = "fast",
    ) -> None:
        if merge not in ("reference", "maskformer"):
            raise ValueError(f"merge must be 'reference' or 'maskformer', got {merge!r}")
        if algorithm not in MERGE_ALGORITHMS:
            raise ValueError(f"algorithm must be one of {MERGE_ALGORITHMS}, got {algorithm!r}")
        self.algorithm = algorithm
        self.class_to_category, self.is_thing_class = class_tables(
            class_to_category, is_thing_class
        )
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

    def logit_threshold(self, probability: float) -> float:
        """The logit where ``probabilities`` reaches ``probability`` (inverse of the activation)."""
        if self.hard_sigmoid:
            return HARD_SIGMOID_SCALE * probability - HARD_SIGMOID_OFFSET
        if probability <= 0.0 or probability >= 1.0:
            return SATURATED_LOGIT if probability >= 1.0 else -SATURATED_LOGIT
        return math.log(probability / (1.0 - probability))

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
        """Merge every image of the batch (``core`` then ``finish`` per image).

        Args:
            outputs: the model output (``mask_logits [B, K, hm, wm]``, ``scores``/``classes``
                ``[B, K]``).
            valid_sizes: per image ``(h, w)`` of the resized image inside the padded input.
            output_sizes: per image original ``(H0, W0)``.
            input_size: ``(H, W)`` of the padded network input (``images.shape[-2:]``).

        Returns:
            One ``PanopticPrediction`` per image at its original size.
        """
        semantic = getattr(outputs, "semantic_logits", None)

        def merge_one(
            b: int, input_hw: tuple[int, int], valid: tuple[int, int], canvas: tuple[int, int]
        ) -> PanopticPrediction:
            core = self.core(
                outputs.mask_logits[b],
                outputs.scores[b],
                outputs.classes[b],
                input_size=input_hw,
                valid_size=valid,
                output_size=canvas,
            )
            return self.finish(
                core,
                semantic_logits=None if semantic is None else semantic[b],
                input_size=input_hw,
                valid_size=valid,
                output_size=canvas,
            )

        return merge_each(
            outputs.mask_logits.shape[0],
            valid_sizes,
            output_sizes,
            input_size,
            self.max_canvas_pixels,
            merge_one,
        )

    def core(
        self,
        mask_logits: Tensor,
        scores: Tensor,
        classes: Tensor,
        *,
        input_size: tuple[Any, Any],
        valid_size: tuple[Any, Any],
        output_size: tuple[Any, Any],
    ) -> MergeCore:
        """The merge's tensor core of one image: eager inference and the exported graph.

        Proposals are sorted and only the prefix up to the last valid one is upsampled to the
        canvas (the rest score 0 and can never own a pixel, so the result is exactly the merge
        of all K). Eager mode cuts the proposals to that prefix and merges in chunks of bounded
        memory; a trace keeps all K rows (static shapes) and upsamples the prefix in one chunk.

        Args:
            mask_logits: ``[K, hm, wm]`` mask logits covering the padded input.
            scores: ``[K]`` proposal scores.
            classes: ``[K]`` int64 class indices.
            input_size: ``(H, W)`` of the padded network input (ints, or 0-d tensors traced).
            valid_size: ``(h, w)`` of the resized image inside it.
            output_size: ``(H0, W0)``: the canvas of the merge.

        Returns:
            ``MergeCore`` (``owner [H0, W0]``, per-proposal tensors in score order).
        """
        eager = not tracing()
        if eager:
            self._check_classes(classes)
        proposals = sort_proposals(
            scores.float(), classes, self.class_usable, self.object_threshold
        )
        all_sorted = proposals
        proposals, ordered = valid_prefix(proposals, mask_logits, eager=eager)
        ordered = ordered.float()
        ch, cw = canvas_of(input_size, valid_size, output_size)
        oh, ow = output_size
        # eager: bounded-memory chunks; a trace: one chunk (the count is dynamic)
        chunk = (
            chunk_for(self.chunk, (int(oh), int(ow)))
            if eager
            else max(1, int(mask_logits.shape[0]))
        )
        if self.algorithm == "fast":  # a trace keeps all K: their count stays static
            return merge_proposals_fast(
                ordered if eager else mask_logits.float()[all_sorted.order],
                proposals,
                (ch, cw),
                (oh, ow),
                probability=self.probabilities,
                logit_threshold=self.logit_threshold,
                mode=self.merge,
                overlap_threshold=self.overlap_threshold,
                min_area=self.min_area,
                mask_threshold=self.mask_threshold,
            )

        def probabilities(start: int, stop: int) -> Tensor:
            part = ordered[None, start:stop]
            # tensor sizes keep the canvas dynamic in a traced graph
            up = F.interpolate(part, size=(ch, cw), mode="bilinear", align_corners=False)
            up = up[0, :, :oh, :ow]
            return self.probabilities_(up) if eager else self.probabilities(up)

        return merge_proposals(
            probabilities,
            proposals,
            (int(oh), int(ow)) if eager else (1, 1),  # a trace has K >= 1: the maps give it
            mode=self.merge,
            overlap_threshold=self.overlap_threshold,
            min_area=self.min_area,
            mask_threshold=self.mask_threshold,
            chunk=chunk,
        )

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
        self._check_classes(classes)
        proposals = sort_proposals(
            scores.float(), classes.long(), self.class_usable, self.object_threshold
        )
        chosen = probs.float()[proposals.order]
        core = merge_proposals(
            lambda start, stop: chosen[start:stop],
            proposals,
            (int(probs.shape[-2]), int(probs.shape[-1])),
            mode=self.merge,
            overlap_threshold=self.overlap_threshold,
            min_area=self.min_area,
            mask_threshold=self.mask_threshold,
            chunk=chunk_for(self.chunk, (int(probs.shape[-2]), int(probs.shape[-1]))),
        )
        return number_segments(
            core, class_to_category=self.class_to_category, is_thing_class=self.is_thing_class
        )

    def _check_classes(self, classes: Tensor) -> None:
        """``ValueError`` unless every proposal class is in ``[0, C)`` (eager callers)."""
        num_classes = len(self.class_to_category)
        if classes.numel() and (int(classes.max()) >= num_classes or int(classes.min()) < 0):
            raise ValueError(
                f"proposal classes must be in [0, {num_classes}), got {classes.tolist()}"
            )
