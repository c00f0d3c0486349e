"""DR1Mask's exportable graph: image -> network -> K detections -> the unified argmax core.

The contract of ``maskconver.export.graph`` (inputs ``image``
``[1, H, W, 3]`` uint8, ``valid_size`` ``[2]``, ``output_size`` ``[2]``; the merge core's five
tensors first), so the onnxruntime backend and the shared numbering step serve both
meta-architectures. Raw outputs: ``panoptic_logits [1, C + K, h4, w4]``, ``det_boxes
[1, K, 4]``, ``det_scores [1, K]``, ``det_classes [1, K]``. NMS becomes ONNX
``NonMaxSuppression`` (``dr1mask.nms``). Only the argmax merge exports: the paste merge is a
Python loop over detections.
"""

from __future__ import annotations

from torch import Tensor, nn

from maskconver.export.graph import CORE_OUTPUTS, ExportError, core_axes
from maskconver.meta.dr1mask.postprocess import DR1MaskPostProcessor

RAW_OUTPUTS = ("panoptic_logits", "det_boxes", "det_scores", "det_classes")


class DR1MaskExportModule(nn.Module):
    """``(image, valid_size, output_size) -> merge core + raw outputs`` for one image.

    Args:
        model: the trained ``DR1Mask``, in eval mode.
        postprocessor: the ``DR1MaskPostProcessor`` whose thresholds the graph reproduces.

    Raises:
        ValueError: for the paste merge (not exportable; the message says so).
    """

    output_names = (*CORE_OUTPUTS, *RAW_OUTPUTS)

    def __init__(self, model: nn.Module, postprocessor: DR1MaskPostProcessor) -> None:
        super().__init__()
        if postprocessor.merge != "argmax":
            raise ExportError(
                "model.dr1mask.merge.mode=paste is not exportable (a Python loop over "
                "detections); export with --set model.dr1mask.merge.mode=argmax"
            )
        self.model = model.eval()
        self.post = postprocessor

    def dynamic_axes(self, dynamic: bool) -> dict[str, dict[int, str]]:
        """The owner map always; with a dynamic input, the unified logits too."""
        axes = core_axes(dynamic)
        if dynamic:
            axes[RAW_OUTPUTS[0]] = {2: "mask_height", 3: "mask_width"}
        return axes

    def forward(self, image: Tensor, valid_size: Tensor, output_size: Tensor) -> tuple[Tensor, ...]:
        """The merge core (``CORE_OUTPUTS``) then ``RAW_OUTPUTS``."""
        x = image.permute(0, 3, 1, 2).float()
        out = self.model(x)
        assert out.panoptic_logits is not None and out.scores is not None
        assert out.classes is not None and out.boxes is not None
        core = self.post.core(
            out.panoptic_logits[0].float(),
            out.scores[0].float(),
            out.classes[0],
            (valid_size[0], valid_size[1]),
            (output_size[0], output_size[1]),
            out.boxes[0],
        )
        return (*core, out.panoptic_logits, out.boxes, out.scores, out.classes)


__all__ = ["RAW_OUTPUTS", "DR1MaskExportModule"]
