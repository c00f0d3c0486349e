"""kMaX-DeepLab's panoptic inference: N queries -> scored masks -> the shared merge core.

Per image (MaX-DeepLab / kMaX-DeepLab inference, on the shared ``postprocess.merge`` core):

1. class probabilities ``softmax(class_logits)`` without the void column: each query's class is
   its argmax, its class probability the maximum;
2. mask probabilities at mask resolution (stride 4): ``sigmoid`` of the mask logits, or a
   ``softmax`` over the queries at every pixel (the training loss's activation);
3. mask confidence: every valid pixel goes to the query with the largest mask probability
   there (kMaX's pixel-wise argmax); a query's confidence is the mean probability over the
   pixels it wins (0 if none);
4. score = class probability x mask confidence; queries need ``score > object_threshold`` and a
   class that maps to a category;
5. the merge of the sorted queries on the output canvas (``maskformer`` mode: a pixel goes to
   ``argmax_q prob_q * score_q``; a segment keeps its won pixels with ``prob >=
   mask_threshold`` if they are ``>= overlap_threshold`` of its own mask), the probabilities
   upsampled from mask resolution chunk by chunk, only up to the last valid query.

``core`` is traceable (static shapes) and the exported graph runs it; ``finish`` numbers the
segments (``postprocess.segments.number_segments``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver.meta.kmax.matching import mask_probabilities
from maskconver.meta.kmax.outputs import KMaXOutput
from maskconver.postprocess.batch import merge_each
from maskconver.postprocess.canvas import canvas_of, chunk_for
from maskconver.postprocess.merge import (
    DEFAULT_CHUNK,
    MergeCore,
    merge_proposals,
    sort_proposals,
    tracing,
    valid_prefix,
)
from maskconver.postprocess.segments import (
    UNUSED_CLASS,
    PanopticPrediction,
    class_tables,
    number_segments,
)


def image_mask_probabilities(
    mask_logits: Tensor, activation: Literal["sigmoid", "softmax"]
) -> Tensor:
    """One image's ``[N, h, w]`` logits -> probabilities (``matching.mask_probabilities``)."""
    return mask_probabilities(mask_logits.float()[None], activation)[0]


def valid_pixels(probs: Tensor, input_size: Sequence[Any], valid_size: Sequence[Any]) -> Tensor:
    """``[h, w]`` bool: pixels of ``probs [N, h, w]`` whose top-left input pixel is valid.

    Mask pixel ``i`` covers input pixel ``i * H / h`` (stride 4 when ``H = 4 h``); the sizes may
    be 0-d tensors (a traced graph keeps them dynamic).
    """
    height, width = probs.shape[-2], probs.shape[-1]
    rows = torch.arange(height, device=probs.device) * input_size[0] < valid_size[0] * height
    cols = torch.arange(width, device=probs.device) * input_size[1] < valid_size[1] * width
    return rows[:, None] & cols[None, :]


def query_scores(class_logits: Tensor, probs: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Scores and classes of the ``N`` queries (steps 1, 3 and 4 of the module docstring).

    Args:
        class_logits: ``[N, C + 1]`` (void last).
        probs: ``[N, h, w]`` mask probabilities.
        valid: ``[h, w]`` bool valid pixels.

    Returns:
        ``scores [N]`` (class probability x mask confidence) and ``classes [N]`` int64.
    """
    class_probs = class_logits.float().softmax(-1)[:, :-1]
    class_prob, classes = class_probs.max(-1)
    best, winner = probs.flatten(1).max(0)  # [h*w]
    weight = valid.flatten().to(probs.dtype)
    num = probs.shape[0]
    zeros = torch.zeros(num, dtype=probs.dtype, device=probs.device)
    won_sum = zeros.scatter_add(0, winner, best * weight)
    won_count = zeros.scatter_add(0, winner, weight)
    confidence = won_sum / won_count.clamp(min=1.0)
    return class_prob * confidence, classes


class KMaXPostProcessor:
    """Turns kMaX-DeepLab outputs into ``PanopticPrediction`` at each image's original size.

    Args:
        class_to_category: model class index -> dataset category id (-1 for unused indices).
        is_thing_class: per class index, True for thing classes.
        activation: mask activation (``"sigmoid"`` or ``"softmax"`` over the queries).
        object_threshold: queries need ``score > object_threshold``.
        overlap_threshold: a segment needs won / own pixels ``>= overlap_threshold``.
        mask_threshold: segment pixels need ``prob >= mask_threshold``.
        chunk: queries upsampled to the canvas at a time (memory ``chunk x H x W``).
        max_canvas_pixels: cap of the merge canvas (0: none); see ``postprocess.canvas``.
    """

    def __init__(
        self,
        *,
        class_to_category: Sequence[int],
        is_thing_class: Sequence[bool],
        activation: Literal["sigmoid", "softmax"] = "sigmoid",
        object_threshold: float = 0.4,
        overlap_threshold: float = 0.8,
        mask_threshold: float = 0.5,
        chunk: int = DEFAULT_CHUNK,
        max_canvas_pixels: int = 0,
    ) -> None:
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")
        self.class_to_category, self.is_thing_class = class_tables(
            class_to_category, is_thing_class
        )
        self.class_usable = torch.tensor([c != UNUSED_CLASS for c in self.class_to_category])
        self.activation: Literal["sigmoid", "softmax"] = activation
        self.object_threshold = object_threshold
        self.overlap_threshold = overlap_threshold
        self.mask_threshold = mask_threshold
        self.chunk = chunk
        self.max_canvas_pixels = max_canvas_pixels

    @torch.no_grad()
    def __call__(
        self,
        outputs: KMaXOutput,
        valid_sizes: Sequence[tuple[int, int]],
        output_sizes: Sequence[tuple[int, int]],
        input_size: tuple[int, int],
    ) -> list[PanopticPrediction]:
        """Merge every image of the batch (``core`` then ``finish`` per image).

        Args:
            outputs: the model output (``class_logits [B, N, C + 1]``, ``mask_logits``).
            valid_sizes: per image ``(h, w)`` of the resized image inside the padded input.
            output_sizes: per image original ``(H0, W0)``.
            input_size: ``(H, W)`` of the padded network input.
        """

        def merge_one(
            b: int, input_hw: tuple[int, int], valid: tuple[int, int], canvas: tuple[int, int]
        ) -> PanopticPrediction:
            core = self.core(
                outputs.class_logits[b],
                outputs.mask_logits[b],
                input_size=input_hw,
                valid_size=valid,
                output_size=canvas,
            )
            return self.finish(core)

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
        class_logits: Tensor,
        mask_logits: Tensor,
        *,
        input_size: tuple[Any, Any],
        valid_size: tuple[Any, Any],
        output_size: tuple[Any, Any],
    ) -> MergeCore:
        """The merge's tensor core of one image: eager inference and the exported graph.

        Args:
            class_logits: ``[N, C + 1]``.
            mask_logits: ``[N, h4, w4]`` covering the padded input.
            input_size: ``(H, W)`` of the padded input (ints, or 0-d tensors traced).
            valid_size: ``(h, w)`` of the resized image inside it.
            output_size: ``(H0, W0)``: the canvas of the merge.

        Returns:
            ``MergeCore`` (``owner [H0, W0]``, per-query tensors in score order).
        """
        eager = not tracing()
        num_classes = len(self.class_to_category)
        if eager and class_logits.shape[-1] != num_classes + 1:
            raise ValueError(
                f"class logits have {class_logits.shape[-1]} columns, expected {num_classes} "
                "classes + void"
            )
        probs = image_mask_probabilities(mask_logits, self.activation)
        valid = valid_pixels(probs, input_size, valid_size)
        scores, classes = query_scores(class_logits, probs, valid)
        proposals = sort_proposals(scores, classes, self.class_usable, self.object_threshold)
        proposals, ordered = valid_prefix(proposals, probs, eager=eager)
        ch, cw = canvas_of(input_size, valid_size, output_size)
        oh, ow = output_size
        chunk = chunk_for(self.chunk, (int(oh), int(ow))) if eager else max(1, int(probs.shape[0]))

        def probabilities(start: int, stop: int) -> Tensor:
            up = F.interpolate(
                ordered[None, start:stop], size=(ch, cw), mode="bilinear", align_corners=False
            )
            return up[0, :, :oh, :ow]

        return merge_proposals(
            probabilities,
            proposals,
            (int(oh), int(ow)) if eager else (1, 1),
            mode="maskformer",
            overlap_threshold=self.overlap_threshold,
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
        """Number the kept queries' segments (things separately, stuff merged per class)."""
        return number_segments(
            core, class_to_category=self.class_to_category, is_thing_class=self.is_thing_class
        )
