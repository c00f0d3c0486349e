"""Squeeze-and-excitation channel gating."""

from __future__ import annotations

from torch import Tensor, nn

from maskconver.layers.types import ActLayer


class SqueezeExcitation(nn.Module):
    """Global mean -> 1x1 conv (bias) -> act -> 1x1 conv (bias) -> gate -> multiply.

    Parameter names (``fc1``, ``fc2``) follow torchvision's ``SqueezeExcitation`` so that
    torchvision MobileNetV3 weights load directly.

    Args:
        channels: C of the gated features.
        squeeze_channels: width of the bottleneck.
        act_layer: activation between the two convs.
        gate_layer: gating non-linearity (sigmoid; hard-sigmoid in MobileNetV3).
        channels_last: input/output layout is ``[B, H, W, C]`` instead of ``[B, C, H, W]``.
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        *,
        act_layer: ActLayer = nn.ReLU,
        gate_layer: ActLayer = nn.Sigmoid,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.activation = act_layer()
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.scale_activation = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        """Gate ``x`` (``[B, C, H, W]``, or ``[B, H, W, C]`` when channels-last); same shape out."""
        if self.channels_last:
            pooled = x.mean(dim=(1, 2), keepdim=True).permute(0, 3, 1, 2)  # [B, C, 1, 1]
        else:
            pooled = x.mean(dim=(2, 3), keepdim=True)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(pooled))))
        if self.channels_last:
            scale = scale.permute(0, 2, 3, 1)  # [B, 1, 1, C]
        return x * scale
