"""Convolution building blocks that take their norm/activation layer types as callables.

All convolutions use ``padding = dilation * (kernel_size - 1) // 2`` ("same" for odd kernels),
so a map produced at stride ``s`` from an ``H``-pixel input has ``ceil(H / s)`` pixels.
"""

from __future__ import annotations

from torch import Tensor, nn

from maskconver.layers.types import ActLayer, NormLayer

DIVISOR = 8  # channel counts of the MobileNet families are multiples of this
MIN_ROUND_RATIO = 0.9  # make_divisible never rounds down by more than 10 %


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Symmetric padding that keeps ``ceil(H / stride)`` output pixels for an odd kernel.

    Raises:
        ValueError: for an even kernel size (no symmetric "same" padding exists).
    """
    if kernel_size % 2 == 0:
        raise ValueError(f"same_padding: kernel_size must be odd, got {kernel_size}")
    return dilation * (kernel_size - 1) // 2


def make_divisible(value: float, divisor: int = DIVISOR) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below 90 % of it.

    Same rule as TF Model Garden ``nn_layers.make_divisible`` and torchvision
    ``_make_divisible`` (minimum ``divisor``). Example: ``make_divisible(32 * 3) == 96``,
    ``make_divisible(20) == 24`` (nearest is 16 < 0.9 * 20, so go up one step).
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < MIN_ROUND_RATIO * value:
        rounded += divisor
    return rounded


class ConvNormAct(nn.Sequential):
    """``Conv2d -> norm -> activation`` as a Sequential (children named ``0``, ``1``, ``2``).

    The index naming matches torchvision's ``Conv2dNormActivation`` so its weights load
    unchanged. Input ``[B, in_ch, H, W]`` -> ``[B, out_ch, ceil(H/stride), ceil(W/stride)]``.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel_size: odd kernel size.
        stride: convolution stride.
        dilation: convolution dilation.
        groups: convolution groups (``in_ch`` for depthwise).
        bias: add a conv bias (normally off because the norm has one).
        norm_layer: ``norm_layer(out_ch)`` builds the norm; ``None`` for no norm.
        act_layer: ``act_layer()`` builds the activation; ``None`` for a linear output.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        act_layer: ActLayer | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_ch,
                out_ch,
                kernel_size,
                stride=stride,
                padding=same_padding(kernel_size, dilation),
                dilation=dilation,
                groups=groups,
                bias=bias,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_ch))
        if act_layer is not None:
            layers.append(act_layer())
        super().__init__(*layers)
        self.out_channels = out_ch

    @property
    def conv(self) -> nn.Conv2d:
        """The convolution (child ``0``)."""
        conv = self[0]
        assert isinstance(conv, nn.Conv2d)
        return conv


class SeparableConv2d(nn.Module):
    """Depthwise kxk conv then pointwise 1x1 conv, with no norm or activation in between.

    Keras ``SeparableConv2D`` semantics: one bias, after the pointwise conv.
    Input ``[B, in_ch, H, W]`` -> ``[B, out_ch, ceil(H/stride), ceil(W/stride)]``.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel_size: odd depthwise kernel size.
        stride: depthwise stride.
        dilation: depthwise dilation.
        bias: bias of the pointwise conv.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_ch,
            in_ch,
            kernel_size,
            stride=stride,
            padding=same_padding(kernel_size, dilation),
            dilation=dilation,
            groups=in_ch,
            bias=False,
        )
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_ch, H, W]`` -> ``[B, out_ch, H', W']``."""
        return self.pointwise(self.depthwise(x))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 inverted bottleneck: expand 1x1 -> depthwise kxk -> [SE] -> project 1x1.

    Children live in ``block`` (a Sequential) exactly as in torchvision's MobileNetV3
    ``InvertedResidual`` (``block.0`` expand, omitted when ``expanded_ch == in_ch``; then
    depthwise; then SE if any; then the linear projection). The residual is added when
    ``stride == 1`` and ``in_ch == out_ch``.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        expanded_ch: width of the expanded (depthwise) features.
        kernel_size: odd depthwise kernel size.
        stride: depthwise stride (callers resolve dilation-for-stride themselves).
        dilation: depthwise dilation.
        norm_layer: norm constructor.
        act_layer: activation constructor for expand and depthwise convs.
        se_layer: ``se_layer(expanded_ch)`` builds the SE module; ``None`` for none.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        expanded_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
        se_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expanded_ch != in_ch:
            layers.append(
                ConvNormAct(in_ch, expanded_ch, 1, norm_layer=norm_layer, act_layer=act_layer)
            )
        layers.append(
            ConvNormAct(
                expanded_ch,
                expanded_ch,
                kernel_size,
                stride=stride,
                dilation=dilation,
                groups=expanded_ch,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )
        )
        if se_layer is not None:
            layers.append(se_layer(expanded_ch))
        layers.append(ConvNormAct(expanded_ch, out_ch, 1, norm_layer=norm_layer, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out_ch

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_ch, H, W]`` -> ``[B, out_ch, ceil(H/stride), ceil(W/stride)]``."""
        out = self.block(x)
        return x + out if self.use_residual else out
