"""The light convolutional head used three times (center heatmap, center and pixel embeddings).

Reference section 1.5 (single-scale) and 1.7 (multi-scale: conv weights shared across levels,
one set of norm layers per level).
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from maskconver.layers.init import he_normal_init, init_prior_bias, trunc_normal_
from maskconver.layers.types import ActLayer, NormLayer

CLASSIFIER_STD = 0.01  # truncated-normal std of the prediction conv (reference 1.8)
DENSE_KERNEL = 3  # kernel of a repetition when kernel_size == 0 (no depthwise)


class LightHead(nn.Module):
    """``num_convs`` x (depthwise kxk -> norm -> act -> 1x1 -> norm -> act) -> 1x1 classifier.

    With ``kernel_size == 0`` a repetition is a dense 3x3 conv -> norm -> act instead. Convs are
    shared across the ``num_levels`` input levels; each level has its own norm layers.

    Args:
        in_channels: channels of every input level.
        out_channels: prediction channels (classes or embedding size).
        channels: width of the repetitions.
        num_convs: number of repetitions (0 allowed: classifier only).
        kernel_size: depthwise kernel (7 in the reference); 0 for dense 3x3 convs.
        num_levels: number of input levels (1 for single-scale).
        norm_layer: ``norm_layer(C)`` builds a norm module.
        act_layer: ``act_layer()`` builds an activation module.
        prior_prob: initialise the classifier bias to ``-log((1 - p) / p)``; None for zero bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        channels: int = 256,
        num_convs: int = 2,
        kernel_size: int = 7,
        num_levels: int = 1,
        norm_layer: NormLayer,
        act_layer: ActLayer,
        prior_prob: float | None = None,
    ) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"LightHead: num_levels must be >= 1, got {num_levels}")
        if kernel_size < 0 or (kernel_size > 0 and kernel_size % 2 == 0):
            raise ValueError(f"LightHead: kernel_size must be 0 or odd, got {kernel_size}")
        self.num_levels = num_levels
        self.convs = nn.ModuleList()
        norm_channels: list[int] = []
        width = in_channels
        for _ in range(num_convs):
            if kernel_size > 0:
                depthwise = nn.Conv2d(
                    width, width, kernel_size, padding=kernel_size // 2, groups=width, bias=False
                )
                pointwise = nn.Conv2d(width, channels, 1, bias=False)
                he_normal_init(pointwise)
                self.convs.extend([depthwise, pointwise])
                norm_channels.extend([width, channels])
            else:
                dense = nn.Conv2d(
                    width, channels, DENSE_KERNEL, padding=DENSE_KERNEL // 2, bias=False
                )
                he_normal_init(dense)
                self.convs.append(dense)
                norm_channels.append(channels)
            width = channels
        self.norms = nn.ModuleList(
            nn.ModuleList(norm_layer(c) for c in norm_channels) for _ in range(num_levels)
        )
        self.acts = nn.ModuleList(act_layer() for _ in norm_channels)
        self.classifier = nn.Conv2d(width, out_channels, 1, bias=True)
        trunc_normal_(self.classifier.weight, CLASSIFIER_STD)
        if prior_prob is not None:
            init_prior_bias(self.classifier, prior_prob)
        elif self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)

    def forward(self, levels: list[Tensor]) -> list[Tensor]:
        """Args: ``levels`` per level ``[B, in_channels, h_l, w_l]`` (exactly ``num_levels``).

        Returns:
            Per level ``[B, out_channels, h_l, w_l]``.
        """
        if len(levels) != self.num_levels:
            raise ValueError(f"LightHead: expected {self.num_levels} levels, got {len(levels)}")
        outputs = []
        for norms, x in zip(self.norms, levels):
            for conv, norm, act in zip(self.convs, cast(nn.ModuleList, norms), self.acts):
                x = act(norm(conv(x)))
            outputs.append(self.classifier(x))
        return outputs
