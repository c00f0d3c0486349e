"""kMaX-DeepLab's exportable graph: image -> network -> query scores -> the merge's tensor core.

``KMaXExportModule`` has the contract of ``maskconver.export.graph`` (inputs ``image``,
``valid_size``, ``output_size``; the merge core first). The merge is the post-processor's own
``core(...)``, the call eager inference makes. Raw outputs: ``class_logits [1, N, C + 1]`` and
``mask_logits [1, N, h4, w4]`` of the final predictor. Training-only parts (the auxiliary
predictions' losses, the semantic heads) are not in it: the auxiliary predictions are computed
inside the network (each block's k-means assignment needs its own), the semantic heads live
in the criterion.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskconver.export.graph import CORE_OUTPUTS, core_axes
from maskconver.meta.kmax.postprocess import KMaXPostProcessor

RAW_OUTPUTS = ("class_logits", "mask_logits")


class KMaXExportModule(nn.Module):
    """``(image, valid_size, output_size) -> merge core + raw outputs`` for one image.

    Args:
        model: the trained ``KMaXDeepLab``, in eval mode.
        postprocessor: the post-processor whose ``core`` the graph runs.
    """

    def __init__(self, model: nn.Module, postprocessor: KMaXPostProcessor) -> None:
        super().__init__()
        self.model = model.eval()
        self.post = postprocessor

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph output names, in ``forward``'s order."""
        return (*CORE_OUTPUTS, *RAW_OUTPUTS)

    def dynamic_axes(self, dynamic: bool) -> dict[str, dict[int, str]]:
        """The owner map always; with a dynamic input, the mask logits too."""
        axes = core_axes(dynamic)
        if dynamic:
            axes["mask_logits"] = {2: "mask_height", 3: "mask_width"}
        return axes

    def forward(self, image: Tensor, valid_size: Tensor, output_size: Tensor) -> tuple[Tensor, ...]:
        """The merge core then ``class_logits`` and ``mask_logits`` of one image."""
        x = image.permute(0, 3, 1, 2).float()
        out = self.model(x)
        input_hw = torch._shape_as_tensor(x)[2:]
        core = self.post.core(
            out.class_logits[0],
            out.mask_logits[0],
            input_size=(input_hw[0], input_hw[1]),
            valid_size=(valid_size[0], valid_size[1]),
            output_size=(output_size[0], output_size[1]),
        )
        return (*core, out.class_logits, out.mask_logits)
