"""ResNet-50 + ConvNeXt-SE UNet: the paper's "ConvNeXt-UNet" (reference ``resnet_unet``).

In the reference code the UNet top-down path lives inside the backbone. For levels
L5, L4, L3 (``i = 0, 1, 2``):

* lateral: 1x1 conv (no bias) of the ResNet map to ``channels[i]`` + LayerNorm (eps 1e-6);
* ``i > 0``: 1x1 conv (no bias) on the previous level's output -> LayerNorm -> nearest
  upsample to the lateral's size -> + lateral;
* ``repeats[i]`` ConvNeXt-SE blocks with drop path ``drop_path_rate * (i + 6) / 8``;
* the activation (GELU).

Outputs ``[C2 (raw ResNet, 256 ch), U3, U4, U5]``. The ResNet sits under the ``resnet.``
prefix; ``load_backbone_weights`` maps plain torchvision ResNet keys onto it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from maskconver.backbones.base import Backbone
from maskconver.backbones.resnet import ResNet50
from maskconver.layers.types import ActLayer
from maskconver.layers.unet import UNetLevel

NUM_UNET_LEVELS = 3  # L5, L4, L3
DROP_PATH_OFFSET = 6  # level i drops with rate * (i + 6) / 8
DROP_PATH_DENOMINATOR = 8


class ResNetUNet(Backbone):
    """ResNet-50 with a ConvNeXt-SE UNet top-down path over C5, C4, C3.

    Channels ``(256, channels[2], channels[1], channels[0])`` at the ResNet's strides.

    Args:
        resnet: the (already built) ResNet-50 trunk.
        channels: UNet widths for L5, L4, L3.
        repeats: ConvNeXt-SE blocks at L5, L4, L3 (reference: 18, 1, 1).
        kernel_size: depthwise kernel of the blocks.
        se_ratio: SE ratio of the blocks.
        drop_path_rate: stochastic-depth base rate (level i uses ``rate * (i + 6) / 8``).
        act_layer: activation after each level's blocks.
    """

    def __init__(
        self,
        resnet: ResNet50,
        *,
        channels: Sequence[int] = (384, 384, 384),
        repeats: Sequence[int] = (18, 1, 1),
        kernel_size: int = 7,
        se_ratio: float = 0.0625,
        drop_path_rate: float = 0.1,
        act_layer: ActLayer = nn.GELU,
    ) -> None:
        super().__init__()
        if len(channels) != NUM_UNET_LEVELS or len(repeats) != NUM_UNET_LEVELS:
            raise ValueError(
                f"ResNetUNet: channels and repeats need {NUM_UNET_LEVELS} entries (L5, L4, L3), "
                f"got channels={list(channels)} repeats={list(repeats)}"
            )
        self.resnet = resnet
        trunk_channels = resnet.channels  # C2, C3, C4, C5
        levels = []
        for i in range(NUM_UNET_LEVELS):
            levels.append(
                UNetLevel(
                    trunk_channels[-1 - i],
                    channels[i],
                    top_down_ch=channels[i - 1] if i > 0 else None,
                    repeats=repeats[i],
                    kernel_size=kernel_size,
                    se_ratio=se_ratio,
                    drop_path=drop_path_rate * (i + DROP_PATH_OFFSET) / DROP_PATH_DENOMINATOR,
                    act_layer=act_layer,
                )
            )
        self.levels = nn.ModuleList(levels)
        self.channels = (trunk_channels[0], channels[2], channels[1], channels[0])
        self.strides = tuple(resnet.strides)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> ``[C2, U3, U4, U5]``, each ``[B, channels[i], H/s_i, W/s_i]``."""
        c2, c3, c4, c5 = self.resnet(images)
        outputs: list[Tensor] = []
        coarser: Tensor | None = None
        for level, lateral in zip(self.levels, (c5, c4, c3)):
            coarser = level(lateral, coarser)
            outputs.append(coarser)
        u5, u4, u3 = outputs
        return [c2, u3, u4, u5]
