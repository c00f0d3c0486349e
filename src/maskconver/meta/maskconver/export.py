"""MaskConver's exportable graph: image -> network -> peaks -> masks -> the merge's tensor core.

``PanopticExportModule`` wraps a trained ``MaskConver`` (SAM's ``SamOnnxModel`` pattern): one
forward from an RGB image of the network input size to fixed-shape tensors, with the contract
of ``maskconver.export.graph`` (inputs ``image``, ``valid_size``, ``output_size``; the merge core
first). The merge is the post-processor's own ``core(...)``, the same call eager inference makes,
so the two paths cannot drift apart. Raw outputs: ``mask_logits [1, K, hm, wm]``,
``peak_scores``, ``peak_classes``, ``center_indices`` ``[1, K]`` (and ``semantic_logits`` for
region-based stuff, which the shared numbering step reads).

Only inference parts are in it: training-only heads live in the criterion and never reach the
model. Numbering the segments stays in Python (``PanopticPostProcessor.finish``), shared with
every backend.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskconver.export.graph import CORE_OUTPUTS, SEMANTIC_OUTPUT, core_axes
from maskconver.meta.maskconver.postprocess import PanopticPostProcessor

RAW_OUTPUTS = ("mask_logits", "peak_scores", "peak_classes", "center_indices")


class PanopticExportModule(nn.Module):
    """``(image, valid_size, output_size) -> merge core + raw outputs`` for one image.

    Args:
        model: the trained network (``MaskConver``), in eval mode.
        postprocessor: the post-processor whose ``core`` (thresholds, merge mode, usable
            classes, hard sigmoid) the graph runs.
    """

    def __init__(self, model: nn.Module, postprocessor: PanopticPostProcessor) -> None:
        super().__init__()
        self.model = model.eval()
        self.post = postprocessor
        self.region_stuff = postprocessor.stuff_from_semantic

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph output names, in ``forward``'s order."""
        extra = (SEMANTIC_OUTPUT,) if self.region_stuff else ()
        return (*CORE_OUTPUTS, *RAW_OUTPUTS, *extra)

    def dynamic_axes(self, dynamic: bool) -> dict[str, dict[int, str]]:
        """The owner map always; with a dynamic input, the mask (and semantic) logits too."""
        axes = core_axes(dynamic)
        if dynamic:
            for name in (RAW_OUTPUTS[0], SEMANTIC_OUTPUT):
                if name in self.output_names:
                    axes[name] = {2: "mask_height", 3: "mask_width"}
        return axes

    def forward(self, image: Tensor, valid_size: Tensor, output_size: Tensor) -> tuple[Tensor, ...]:
        """The merge core and raw outputs of one image (see the module docstring).

        Outputs come in ``CORE_OUTPUTS`` then ``RAW_OUTPUTS`` order, then ``semantic_logits``
        with region-based stuff.
        """
        x = image.permute(0, 3, 1, 2).float()
        out = self.model(x)
        input_hw = torch._shape_as_tensor(x)[2:]  # traced as a shape, dynamic in the export
        core = self.post.core(
            out.mask_logits[0],
            out.scores[0],
            out.classes[0],
            input_size=(input_hw[0], input_hw[1]),
            valid_size=(valid_size[0], valid_size[1]),
            output_size=(output_size[0], output_size[1]),
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
