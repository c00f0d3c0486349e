"""The decoder contract shared by every pixel decoder.

A decoder takes the backbone's maps (fine to coarse, as declared by ``Backbone.channels`` /
``Backbone.strides``) and returns its own list of maps, declaring their widths and strides the
same way, so fusions and heads size themselves from ``decoder.channels`` / ``decoder.strides``.
"""

from __future__ import annotations

from torch import Tensor, nn


class Decoder(nn.Module):
    """Base class: ``forward(features) -> list[Tensor]``, fine to coarse.

    Subclasses set in their constructor:

    * ``channels``: width of each returned map;
    * ``strides``: stride of each returned map with respect to the input image;
    * ``min_train_batch`` (optional, default 1): the smallest number of images per training
      forward for which the decoder's batch statistics are meaningful (ASPP's image pooling
      with batch norm needs 2: with one image its pooled channel has zero variance);
    * ``roles`` (optional): for decoders whose outputs serve different heads, output indices by
      role, ``{"center": ..., "embedding": ..., "pixel": ...}`` (e.g. ``DR1Basis``); without it
      every head reads the same levels.

    Input: ``[B, C_i, H_i, W_i]`` backbone maps. Output ``j``: ``[B, channels[j], h_j, w_j]``
    with ``h_j ~ ceil(H / strides[j])``.
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    min_train_batch: int = 1
    roles: dict[str, tuple[int, ...]] | None = None

    def forward(self, features: list[Tensor]) -> list[Tensor]:  # pragma: no cover - interface
        """Backbone maps, fine to coarse -> decoder maps, fine to coarse."""
        raise NotImplementedError
