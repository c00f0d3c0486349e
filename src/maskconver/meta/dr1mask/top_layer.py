"""DR1Mask's top layer (paper section 3.2.1): one conv on the FCOS box tower, per location.

It predicts, at every location of every level, the instance embedding ``e`` (E values, as the
instance module needs: D for the *vector embedding*, the paper's panoptic choice, Table 7;
``instance_modules.py``) and the DR1 factors of that level, ``C_l = [A_l, B_l]`` (the
conditional feature pyramid, split evenly along the channels).
The factors come from the box tower, "same as the features for instance embedding" (Table 3:
from the class tower or the FPN outputs they were worse than none).

The kernel size (3 here, as BlendMask's top layer) and any activation on the factors were lost
from the paper text; the factor channels are zero-initialised so that with ``"one_plus"``
(``A = 1 + A_hat``) the basis starts as the plain top-down path (design note 4.2).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from maskconver.meta.dr1mask.fcos import INIT_STD

Factors = Literal["in", "out", "both", "none"]
FACTORS = ("in", "out", "both", "none")


class TopLayer(nn.Module):
    """``conv(box tower) -> (embedding [D], A_hat [W] | None, B_hat [W] | None)``.

    Args:
        in_channels: box-tower width.
        embedding_dim: E, the instance embedding's width: the instance module's
            ``embedding_dim`` (the basis width D for the vector embedding, whose embedding is a
            column of the unified panoptic layer and weighs the basis channels).
        basis_width: width W of the DR1Basis (size of each factor).
        factors: ``"both"`` (paper), ``"in"`` (A only), ``"out"`` (B only) or ``"none"``.
        kernel_size: the conv's kernel.
    """

    def __init__(
        self,
        in_channels: int,
        embedding_dim: int,
        basis_width: int,
        *,
        factors: Factors = "both",
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if factors not in FACTORS:
            raise ValueError(f"TopLayer: factors must be one of {FACTORS}, got {factors!r}")
        self.embedding_dim = embedding_dim
        self.sizes = (
            basis_width if factors in ("in", "both") else 0,
            basis_width if factors in ("out", "both") else 0,
        )
        self.conv = nn.Conv2d(
            in_channels, embedding_dim + sum(self.sizes), kernel_size, padding=kernel_size // 2
        )
        nn.init.normal_(self.conv.weight[:embedding_dim], std=INIT_STD)
        nn.init.zeros_(self.conv.weight[embedding_dim:])
        assert self.conv.bias is not None
        nn.init.zeros_(self.conv.bias)

    def forward(self, box_features: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``[B, in, h, w]`` -> ``(e [B, D, h, w], A_hat [B, W, h, w] | None, B_hat | None)``."""
        out = self.conv(box_features)
        d = self.embedding_dim
        size_a, size_b = self.sizes
        a_raw = out[:, d : d + size_a] if size_a else None
        b_raw = out[:, d + size_a : d + size_a + size_b] if size_b else None
        return out[:, :d], a_raw, b_raw
