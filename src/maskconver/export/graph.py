"""The contract of an exportable graph module, shared by every meta-architecture.

A meta-architecture's export module (``MetaArchitecture.build_export_module``) is an
``nn.Module`` with ``forward(image, valid_size, output_size)`` for one image:

* inputs (``INPUT_NAMES``): ``image`` ``[1, H, W, 3]`` uint8 (or float 0..255) already resized
  and padded as the eval transform does, ``valid_size`` ``[2]`` int64 (the resized image inside
  the padded input) and ``output_size`` ``[2]`` int64 (the original size: the merge canvas);
* outputs: the merge's tensor core first (``CORE_OUTPUTS``: ``owner [H0, W0]``, ``keep``,
  ``classes``, ``scores``, ``areas`` ``[K]``), then the architecture's raw outputs.

It tells the generic exporter and the onnxruntime backend what it returns: ``output_names``
(in ``forward``'s order) and ``dynamic_axes(dynamic)`` (the ONNX dynamic axes of its
outputs). Besides the core, the shared numbering step reads one optional output,
``SEMANTIC_OUTPUT`` (region-based stuff). Nothing here imports torch.
"""

from __future__ import annotations

from typing import Protocol

from maskconver.errors import MaskconverError

INPUT_NAMES = ("image", "valid_size", "output_size")
CORE_OUTPUTS = ("owner", "keep", "classes", "scores", "areas")
# the one optional output the shared numbering step reads (``finish(semantic_logits=...)``)
SEMANTIC_OUTPUT = "semantic_logits"
OWNER_AXES = {0: "out_height", 1: "out_width"}  # the merge canvas is the image's size
IMAGE_AXES = {1: "height", 2: "width"}  # image input of a --dynamic export


class ExportError(MaskconverError, ValueError):
    """The export cannot be made or a file is not a maskconver ONNX model (message says why)."""


class ExportGraph(Protocol):
    """What the generic exporter and the onnxruntime backend ask an export module."""

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph output names in ``forward``'s order (``CORE_OUTPUTS`` first)."""
        ...

    def dynamic_axes(self, dynamic: bool) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes of the outputs (``dynamic``: the input size is dynamic too)."""
        ...


def core_axes(dynamic: bool) -> dict[str, dict[int, str]]:
    """Dynamic axes every graph shares: the owner map, and the image of a dynamic export."""
    axes: dict[str, dict[int, str]] = {"owner": dict(OWNER_AXES)}
    if dynamic:
        axes["image"] = dict(IMAGE_AXES)
    return axes
