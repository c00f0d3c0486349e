"""Feature fusions that feed each head: (backbone maps, decoder maps) -> the head's input levels.

Each of the three heads owns its fusion instance (the reference builds three independent
fusions, reference section 1.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.layers.init import he_normal_init
from maskconver.layers.types import ActLayer, NormLayer


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (half-pixel centres, TF ``resize`` semantics); no-op at equal size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _check_index(index: int, items: Sequence[Tensor], what: str) -> None:
    if not -len(items) <= index < len(items):
        raise IndexError(f"{what}: index {index} out of range for {len(items)} feature maps")


class SumToMerge(nn.Module):
    """DeepLabv3+ ``sum_to_merge``: project a backbone level and add the upsampled decoder map.

    ``y = act(norm(conv1x1(backbone[low_index])))``, ``x = resize(decoder[high_index])`` to y's
    size, output ``[x + y]``. The decoder map must already have ``channels`` channels.

    Args:
        low_channels: channels of ``backbone[low_index]``.
        low_index: index of the low-level (fine) backbone map.
        high_index: index of the decoder map to upsample.
        channels: projection width (256 in the reference).
        norm_layer: ``norm_layer(C)`` builds a norm module.
        act_layer: ``act_layer()`` builds an activation module.
    """

    def __init__(
        self,
        low_channels: int,
        *,
        low_index: int,
        high_index: int,
        channels: int = 256,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        self.low_index = low_index
        self.high_index = high_index
        self.channels = channels
        self.project = nn.Sequential(
            nn.Conv2d(low_channels, channels, 1, bias=False), norm_layer(channels), act_layer()
        )
        he_normal_init(self.project[0])

    def forward(
        self, backbone_features: list[Tensor], decoder_features: list[Tensor]
    ) -> list[Tensor]:
        """Args: backbone maps ``[B, C_i, H_i, W_i]`` and decoder maps ``[B, channels, h, w]``.

        Returns:
            One map ``[B, channels, H_low, W_low]``.
        """
        _check_index(self.low_index, backbone_features, "SumToMerge backbone")
        _check_index(self.high_index, decoder_features, "SumToMerge decoder")
        y = self.project(backbone_features[self.low_index])
        x = decoder_features[self.high_index]
        if x.shape[1] != y.shape[1]:
            raise ValueError(
                f"SumToMerge: decoder map has {x.shape[1]} channels, projection has {y.shape[1]}"
            )
        return [resize_to(x, y.shape[-2:]) + y]


class PyramidFusion(nn.Module):
    """Resize every decoder level bilinearly to ``backbone[target_index]``'s size and sum.

    Args:
        target_index: index of the backbone map whose spatial size is the target.
    """

    def __init__(self, *, target_index: int) -> None:
        super().__init__()
        self.target_index = target_index

    def forward(
        self, backbone_features: list[Tensor], decoder_features: list[Tensor]
    ) -> list[Tensor]:
        """Returns one map ``[B, C, H_t, W_t]`` (all decoder levels must share C)."""
        _check_index(self.target_index, backbone_features, "PyramidFusion backbone")
        size = backbone_features[self.target_index].shape[-2:]
        out = resize_to(decoder_features[0], size)
        for x in decoder_features[1:]:
            out = out + resize_to(x, size)
        return [out]


class SelectLevels(nn.Module):
    """Pass a subset of the decoder levels through unchanged.

    Args:
        indices: decoder map indices, in output order.
    """

    def __init__(self, indices: Sequence[int]) -> None:
        super().__init__()
        if len(indices) == 0:
            raise ValueError("SelectLevels: indices is empty")
        self.indices = tuple(indices)

    def forward(
        self, backbone_features: list[Tensor], decoder_features: list[Tensor]
    ) -> list[Tensor]:
        """Returns ``[decoder_features[i] for i in indices]``."""
        for i in self.indices:
            _check_index(i, decoder_features, "SelectLevels decoder")
        return [decoder_features[i] for i in self.indices]
