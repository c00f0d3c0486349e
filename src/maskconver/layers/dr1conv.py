"""Dynamic rank-1 convolution (DR1Mask section 3.1): ``Y = Conv_W(X * A) * B``.

A static ``k x k`` convolution ``W`` (``[C_out, C_in, k, k]``) whose input is multiplied, pixel by
pixel and image by image, by a dense input factor ``A`` ``[B, C_in, H, W]`` and whose output is
multiplied by a dense output factor ``B`` ``[B, C_out, H', W']``. For ``k = 1`` the layer is, at
every pixel, the convolution with the dynamic weight ``W * (b a^T)``:
``y = diag(b) W diag(a) x = (W * b a^T) x`` -- a rank-1 modulation of the static weight (hence
the name; BatchEnsemble's factorisation with dense, position-dependent factors). For ``k > 1``
the input factor acts at each tap's source pixel, still a rank-1 modulation per tap. The only
extra parameters are in whatever produces ``A`` and ``B`` (``DR1FactorGenerator``).

Factor parametrisation (the paper's activation was lost in extraction; design note 4.2):

* ``"one_plus"``: ``A = 1 + A_hat`` (our choice): with the generator's last conv zero-initialised
  the layer starts as the plain static conv;
* ``"two_sigmoid"``: ``A = 2 sigmoid(A_hat)``, bounded in ``(0, 2)``, also 1 at a zero init.

``factors`` picks ``"in"`` (only A), ``"out"`` (only B) or ``"both"``. A multiplies the input
before the conv's zero padding; B comes before any norm that follows the layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Factors = Literal["in", "out", "both"]
FactorParam = Literal["one_plus", "two_sigmoid"]
FACTORS = ("in", "out", "both")
FACTOR_PARAMS = ("one_plus", "two_sigmoid")


def activate_factor(raw: Tensor, param: FactorParam) -> Tensor:
    """The multiplicative factor of a raw generator output (1 where ``raw`` is 0)."""
    if param == "one_plus":
        return 1.0 + raw
    return 2.0 * torch.sigmoid(raw)


class DR1FactorGenerator(nn.Module):
    """1x1 conv from a context map to the raw factors ``A_hat`` / ``B_hat``, zero-initialised.

    Args:
        context_channels: channels of the context map.
        in_channels: C_in of the DR1Conv (size of ``A_hat``; unused with ``factors="out"``).
        out_channels: C_out of the DR1Conv (size of ``B_hat``; unused with ``factors="in"``).
        factors: which factors to produce.
    """

    def __init__(
        self, context_channels: int, in_channels: int, out_channels: int, *, factors: Factors
    ) -> None:
        super().__init__()
        if factors not in FACTORS:
            raise ValueError(f"DR1FactorGenerator: factors must be one of {FACTORS}")
        self.sizes = (
            in_channels if factors in ("in", "both") else 0,
            out_channels if factors in ("out", "both") else 0,
        )
        self.conv = nn.Conv2d(context_channels, sum(self.sizes), 1)
        nn.init.zeros_(self.conv.weight)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, context: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Raw factors of a ``[B, ctx, H, W]`` context map.

        Returns:
            ``(A_hat [B, C_in, H, W] | None, B_hat [B, C_out, H, W] | None)``.
        """
        raw = self.conv(context)
        size_a, size_b = self.sizes
        a = raw[:, :size_a] if size_a else None
        b = raw[:, size_a : size_a + size_b] if size_b else None
        return a, b


class DR1Conv(nn.Module):
    """``Conv_W(X * A) * B`` with a static ``kernel_size`` conv (no bias: a norm follows).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: odd kernel; padding keeps the size (stride 1).
        param: ``"one_plus"`` or ``"two_sigmoid"`` (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        param: FactorParam = "one_plus",
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"DR1Conv: kernel_size must be odd, got {kernel_size}")
        if param not in FACTOR_PARAMS:
            raise ValueError(f"DR1Conv: param must be one of {FACTOR_PARAMS}")
        self.param: FactorParam = param
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )

    def forward(
        self, x: Tensor, a_raw: Tensor | None = None, b_raw: Tensor | None = None
    ) -> Tensor:
        """Modulate, convolve, modulate.

        Args:
            x: ``[B, C_in, H, W]``.
            a_raw: raw input factor ``[B, C_in, H, W]`` (None: A = 1).
            b_raw: raw output factor ``[B, C_out, H, W]`` (None: B = 1).

        Returns:
            ``[B, C_out, H, W]``.
        """
        if a_raw is not None:
            x = x * activate_factor(a_raw, self.param)
        y = self.conv(x)
        if b_raw is not None:
            y = y * activate_factor(b_raw, self.param)
        return y
