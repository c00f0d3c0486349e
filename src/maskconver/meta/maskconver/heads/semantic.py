"""A small per-pixel classifier on the mask-feature map (ReMaX's auxiliary semantic head).

``num_convs`` x (3x3 conv -> norm -> act) then a 1x1 conv to the classes. Used training-only by
the ReMaX criterion (it never enters the model, the inference graph or the export), and inside
the model for region-based stuff (MaskConver Table 7), where it is part of inference.
"""

from __future__ import annotations

from torch import Tensor, nn

from maskconver.layers.init import he_normal_init
from maskconver.layers.types import ActLayer, NormLayer

CONV_KERNEL = 3
CLASSIFIER_STD = 0.01


class SemanticHead(nn.Module):
    """``[B, in_channels, h, w]`` features -> ``[B, num_classes, h, w]`` class logits.

    Args:
        in_channels: channels of the input map (the mask-feature width E).
        num_classes: output classes C.
        channels: width of the hidden convs.
        num_convs: number of 3x3 conv + norm + act blocks (0: a linear 1x1 classifier).
        norm_layer: ``norm_layer(C)`` builds a norm module.
        act_layer: ``act_layer()`` builds an activation module.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int = 64,
        num_convs: int = 2,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(num_convs):
            conv = nn.Conv2d(width, channels, CONV_KERNEL, padding=CONV_KERNEL // 2, bias=False)
            he_normal_init(conv)
            layers += [conv, norm_layer(channels), act_layer()]
            width = channels
        self.tower = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        nn.init.normal_(self.classifier.weight, std=CLASSIFIER_STD)
        if self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Tensor) -> Tensor:
        """Class logits ``[B, num_classes, h, w]`` of ``features`` ``[B, in_channels, h, w]``."""
        return self.classifier(self.tower(features))
