"""ResNet-50 (v1.5) feature extractor with torchvision's parameter names.

Names match ``torchvision.models.resnet50`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer1.0.downsample.0/1``) so ImageNet weights such as ``resnet50-0676ba61.pth`` load
directly; the ``fc`` classifier is not built (23,508,032 parameters). The bottleneck stride
sits on the 3x3 conv (v1.5). Stochastic depth of group ``i`` (0..3) is
``drop_path_rate * (i + 2) / 8`` as in the reference ``resnet_unet`` backbone.
"""

from __future__ import annotations

from torch import Tensor, nn

from maskconver.backbones.base import Backbone
from maskconver.layers.drop import DropPath
from maskconver.layers.types import ActLayer, NormLayer

EXPANSION = 4  # bottleneck output = 4 x base width
STEM_CHANNELS = 64
STEM_KERNEL = 7
POOL_KERNEL = 3
BLOCKS_PER_GROUP = (3, 4, 6, 3)
BASE_WIDTHS = (64, 128, 256, 512)
GROUP_STRIDES = (1, 2, 2, 2)
FEATURE_STRIDES = (4, 8, 16, 32)
SUPPORTED_OUTPUT_STRIDES = (8, 16, 32)
DROP_PATH_OFFSET = 2  # group i drops with rate * (i + 2) / 8
DROP_PATH_DENOMINATOR = 8


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride, dilation) -> 1x1 expand, plus (projected) shortcut.

    Args:
        in_ch: input channels.
        width: bottleneck width; the output has ``4 * width`` channels.
        stride: stride of the 3x3 conv and the projection.
        dilation: dilation of the 3x3 conv.
        norm_layer: norm constructor.
        act_layer: activation constructor.
        drop_path: stochastic-depth probability of the residual branch.
    """

    def __init__(
        self,
        in_ch: int,
        width: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        out_ch = width * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = norm_layer(out_ch)
        self.act = act_layer()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), norm_layer(out_ch)
            )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_ch, H, W]`` -> ``[B, 4*width, ceil(H/stride), ceil(W/stride)]``."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(shortcut + self.drop_path(out))


class ResNet50(Backbone):
    """ResNet-50 returning ``[C2, C3, C4, C5]`` with channels 256, 512, 1024, 2048.

    Strides ``(4, 8, 16, 32)``; with ``output_stride`` 16 (8) the last (two) group(s) trade
    stride for dilation with torchvision's ``replace_stride_with_dilation`` semantics (the
    first block of a dilated group keeps the previous dilation).

    Args:
        norm_layer: norm constructor (``FrozenBatchNorm2d`` for frozen BN).
        act_layer: activation constructor (GELU inside the reference ResNet-UNet).
        drop_path_rate: stochastic-depth base rate (0.1 in the reference ResNet-UNet).
        output_stride: 32, 16 or 8.
    """

    def __init__(
        self,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
        drop_path_rate: float = 0.0,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if output_stride not in SUPPORTED_OUTPUT_STRIDES:
            raise ValueError(
                f"ResNet50: output_stride must be one of {SUPPORTED_OUTPUT_STRIDES}, "
                f"got {output_stride}"
            )
        self.conv1 = nn.Conv2d(
            3, STEM_CHANNELS, STEM_KERNEL, stride=2, padding=STEM_KERNEL // 2, bias=False
        )
        self.bn1 = norm_layer(STEM_CHANNELS)
        self.act = act_layer()
        self.maxpool = nn.MaxPool2d(POOL_KERNEL, stride=2, padding=POOL_KERNEL // 2)
        in_ch = STEM_CHANNELS
        current_stride = FEATURE_STRIDES[0]
        dilation = 1
        strides = []
        for i, (num_blocks, width, group_stride) in enumerate(
            zip(BLOCKS_PER_GROUP, BASE_WIDTHS, GROUP_STRIDES)
        ):
            previous_dilation = dilation
            if current_stride * group_stride > output_stride:
                dilation *= group_stride
                group_stride = 1
            current_stride *= group_stride
            rate = drop_path_rate * (i + DROP_PATH_OFFSET) / DROP_PATH_DENOMINATOR
            blocks = []
            for j in range(num_blocks):
                blocks.append(
                    Bottleneck(
                        in_ch,
                        width,
                        stride=group_stride if j == 0 else 1,
                        dilation=previous_dilation if j == 0 else dilation,
                        norm_layer=norm_layer,
                        act_layer=act_layer,
                        drop_path=rate,
                    )
                )
                in_ch = width * EXPANSION
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            strides.append(current_stride)
        self.channels = tuple(w * EXPANSION for w in BASE_WIDTHS)
        self.strides = tuple(strides)
        self._init_weights()

    def _init_weights(self) -> None:
        """Torchvision's ResNet init: Kaiming-normal (fan-out) convs, unit/zero BN."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> ``[C2, C3, C4, C5]``, each ``[B, channels[i], H/s_i, W/s_i]``."""
        x = self.maxpool(self.act(self.bn1(self.conv1(images))))
        features = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = self.get_submodule(name)(x)
            features.append(x)
        return features
