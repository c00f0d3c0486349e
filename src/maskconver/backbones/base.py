"""The backbone contract shared by every feature extractor."""

from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """Base class: ``forward(images) -> list[Tensor]`` ordered fine to coarse.

    Subclasses set ``channels`` and ``strides`` (one entry per returned feature map) in their
    constructor, like timm's ``feature_info.channels()`` / ``.reduction()``. Decoders and heads
    size themselves from these, never from hard-coded channel lists.

    Input: ``[B, 3, H, W]`` normalised float images. Output ``i``:
    ``[B, channels[i], ceil(H / strides[i]), ceil(W / strides[i])]`` (sizes may differ by one
    pixel from ``ceil`` for odd inputs; consumers resize rather than assume).
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]

    def forward(self, images: Tensor) -> list[Tensor]:  # pragma: no cover - interface
        """``[B, 3, H, W]`` normalised images -> feature maps, fine to coarse."""
        raise NotImplementedError
