"""The exportable graph: image -> network -> peaks -> masks -> the merge's tensor core.

``PanopticExportModule`` wraps a trained ``MaskConver`` (SAM's ``SamOnnxModel`` pattern): one
forward from an RGB image of the network input size (already resized and padded as the eval
transform does) to fixed-shape tensors, with nothing data-dependent on the way:

* inputs: ``image`` ``[1, H, W, 3]`` uint8 (or float 0..255), ``valid_size`` ``[2]`` int64 (the
  resized image inside the padded input) and ``output_size`` ``[2]`` int64 (the original size:
  the canvas the merge runs on, exactly as ``PanopticPostProcessor`` does);
* outputs: ``owner`` ``[H0, W0]`` int64 (proposal index per pixel, -1 void), ``keep``,
  ``classes``, ``scores``, ``areas`` ``[K]`` (score-sorted), and the raw network outputs
  ``mask_logits [1, K, hm, wm]``, ``peak_scores``, ``peak_classes``, ``center_indices`` ``[1, K]``
  (and ``semantic_logits`` for region-based stuff).

Only inference parts are in it: training-only heads live in the criterion and never reach the
model. Numbering the segments stays in Python (``PanopticPostProcessor.finish``), shared with
every backend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.postprocess.merge import merge_proposals, sort_proposals
from maskconver.postprocess.panoptic import PanopticPostProcessor
from maskconver.postprocess.peaks import hard_sigmoid

INPUT_NAMES = ("image", "valid_size", "output_size")
CORE_OUTPUTS = ("owner", "keep", "classes", "scores", "areas")
RAW_OUTPUTS = ("mask_logits", "peak_scores", "peak_classes", "center_indices")
SEMANTIC_OUTPUT = "semantic_logits"


def canvas_of(input_hw: Tensor, valid: Tensor, output: Tensor) -> tuple[Tensor, Tensor]:
    """``(ceil(H * H0 / h) max H0, ceil(W * W0 / w) max W0)`` with integer tensor ops.

    Args:
        input_hw: ``[2]`` int64 ``(H, W)`` of the padded network input.
        valid: ``[2]`` int64 ``(h, w)`` of the resized image inside it.
        output: ``[2]`` int64 ``(H0, W0)`` original size.
    """
    height, width = input_hw[0], input_hw[1]
    oh, ow, vh, vw = output[0], output[1], valid[0], valid[1]
    ch = torch.maximum(oh, (height * oh + vh - 1) // vh)
    cw = torch.maximum(ow, (width * ow + vw - 1) // vw)
    return ch, cw


class PanopticExportModule(nn.Module):
    """``(image, valid_size, output_size) -> merge core + raw outputs`` for one image.

    Args:
        model: the trained network (``MaskConver``), in eval mode.
        postprocessor: the post-processor whose settings (thresholds, merge mode, usable
            classes, hard sigmoid, chunk) the graph reproduces.
    """

    def __init__(self, model: nn.Module, postprocessor: PanopticPostProcessor) -> None:
        super().__init__()
        self.model = model.eval()
        self.post = postprocessor
        self.class_usable: Tensor
        self.register_buffer("class_usable", postprocessor.class_usable.clone(), persistent=False)
        self.region_stuff = postprocessor.stuff_from_semantic

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph output names, in ``forward``'s order."""
        extra = (SEMANTIC_OUTPUT,) if self.region_stuff else ()
        return (*CORE_OUTPUTS, *RAW_OUTPUTS, *extra)

    def forward(self, image: Tensor, valid_size: Tensor, output_size: Tensor) -> tuple[Tensor, ...]:
        """The merge core and raw outputs of one image (see the module docstring).

        Outputs come in ``CORE_OUTPUTS`` then ``RAW_OUTPUTS`` order, then ``semantic_logits``
        with region-based stuff.
        """
        x = image.permute(0, 3, 1, 2).float()
        out = self.model(x)
        logits, scores, classes = out.mask_logits[0].float(), out.scores[0].float(), out.classes[0]
        proposals = sort_proposals(scores, classes, self.class_usable, self.post.object_threshold)
        # only the valid proposals (a sorted prefix; at least one) are upsampled: the others
        # score 0 and can never win a pixel, so the result equals the merge of all K
        count = proposals.valid.sum().clamp(min=1)
        ordered = logits[proposals.order][:count]
        input_hw = torch._shape_as_tensor(x)[2:]  # traced as a shape, dynamic in the export
        ch, cw = canvas_of(input_hw, valid_size, output_size)
        oh, ow = output_size[0], output_size[1]
        post = self.post

        def probabilities(start: int, stop: int) -> Tensor:
            chunk = ordered[None, start:stop]
            # tensor sizes: the canvas stays dynamic in the traced graph
            up = F.interpolate(chunk, size=(ch, cw), mode="bilinear", align_corners=False)  # type: ignore[arg-type]
            up = up[0, :, :oh, :ow]
            return hard_sigmoid(up) if post.hard_sigmoid else up.sigmoid()

        core = merge_proposals(
            probabilities,
            proposals,
            (1, 1),  # unused: K >= 1, the maps give the canvas
            mode=post.merge,
            overlap_threshold=post.overlap_threshold,
            min_area=post.min_area,
            mask_threshold=post.mask_threshold,
            chunk=logits.shape[0],  # one chunk of the valid proposals
        )
        outputs: tuple[Tensor, ...] = (
            *core,
            out.mask_logits,
            out.scores,
            out.classes,
            out.center_indices,
        )
        if self.region_stuff and out.semantic_logits is not None:
            outputs = (*outputs, out.semantic_logits)
        return outputs
