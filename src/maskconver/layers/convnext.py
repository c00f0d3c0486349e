"""ConvNeXt block with squeeze-excitation, as in the reference ``resnet_unet`` (section 1.3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskconver.layers.drop import DropPath
from maskconver.layers.init import trunc_normal_init
from maskconver.layers.se import SqueezeExcitation

CONVNEXT_INIT_STD = 0.02
LAYER_NORM_EPS = 1e-6


class ConvNeXtSEBlock(nn.Module):
    """Residual ConvNeXt block with SE on the expanded features; no activation after the add.

    ``x + drop_path(gamma * pw2(SE(GELU(pw1(LN(dwconv(x)))))))``, where ``dwconv`` is a
    depthwise kxk conv with bias, LN normalises channels per pixel (eps 1e-6), ``pw1``/``pw2``
    are channels-last linears ``dim -> expansion*dim -> dim``, SE squeezes the expanded width to
    ``max(1, int(expansion*dim*se_ratio))`` with GELU inside and a sigmoid gate, and ``gamma``
    is a per-channel layer scale. GELU is hard-coded, as in the reference.

    Args:
        dim: channels C of input and output.
        kernel_size: odd depthwise kernel size.
        expansion: width multiplier of the inverted bottleneck.
        se_ratio: SE squeeze ratio of the expanded width; 0 disables SE.
        layer_scale_init: initial gamma; 0 disables layer scale.
        drop_path: stochastic-depth probability of the residual branch.
    """

    def __init__(
        self,
        dim: int,
        *,
        kernel_size: int = 7,
        expansion: int = 4,
        se_ratio: float = 0.0625,
        layer_scale_init: float = 1e-6,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"ConvNeXtSEBlock: kernel_size must be odd, got {kernel_size}")
        hidden = expansion * dim
        self.dwconv = nn.Conv2d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=True
        )
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.se: nn.Module = (
            SqueezeExcitation(
                hidden,
                max(1, int(hidden * se_ratio)),
                act_layer=nn.GELU,
                gate_layer=nn.Sigmoid,
                channels_last=True,
            )
            if se_ratio > 0
            else nn.Identity()
        )
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma: nn.Parameter | None = (
            nn.Parameter(torch.full((dim,), layer_scale_init)) if layer_scale_init > 0 else None
        )
        self.drop_path = DropPath(drop_path)
        trunc_normal_init(self, CONVNEXT_INIT_STD)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, dim, H, W]`` -> ``[B, dim, H, W]``."""
        y = self.dwconv(x).permute(0, 2, 3, 1)  # [B, H, W, C]
        y = self.norm(y)
        y = self.se(self.act(self.pwconv1(y)))  # [B, H, W, expansion*C]
        y = self.pwconv2(y)
        if self.gamma is not None:
            y = y * self.gamma
        y = y.permute(0, 3, 1, 2)  # [B, C, H, W]
        return x + self.drop_path(y)
