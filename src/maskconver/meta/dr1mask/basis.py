"""DR1Basis (DR1Mask section 3.2.2): the bottom-up branch, one shared map ``F`` at stride 4.

Starting from the coarsest pyramid level (P7, stride 128, in the paper's configuration), each
step reduces ``P_l`` to the basis width ``W`` (a 3x3 conv; the paper's kernel size was lost),
adds the aligned x2 of the previous step (cropped at the right and bottom to ``P_l``'s size,
paper section 3.3), and merges with a DR1Conv whose factors ``A_l, B_l`` come from the top
layer at that level (the conditional feature pyramid):

``F_l = act(norm(DR1Conv_{A_l, B_l}(reduce(P_l) + crop(up2(F_{l+1})))))``

then the finest step is upsampled x2 once more (stride 4 for P3) and cropped to the size the
caller asks for. Whether Eq. 6 sums or concatenates, and where the x2 sits, went with the lost
equation body; this is the design note's working form (4.3).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from maskconver.layers.dr1conv import DR1Conv, FactorParam
from maskconver.layers.init import he_normal_init
from maskconver.layers.resample import upsample_to
from maskconver.layers.types import ActLayer, NormLayer

KERNEL = 3


class DR1MaskBasis(nn.Module):
    """The DR1Conv top-down merge of a pyramid into ``F``.

    Args:
        channels: pyramid width.
        num_levels: pyramid levels (fine to coarse).
        width: basis width ``W`` (= D; paper: 64 for panoptic, Table 6).
        param: factor parametrisation of the DR1Convs (``"one_plus"`` or ``"two_sigmoid"``).
        aligned: aligned x2 upsampling + crop (else a half-pixel resize, the Table 5 control).
        norm_layer: norm after each DR1Conv.
        act_layer: activation after each norm.
    """

    def __init__(
        self,
        channels: int,
        num_levels: int,
        *,
        width: int,
        param: FactorParam = "one_plus",
        aligned: bool = True,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        self.reduce = nn.ModuleList(
            nn.Conv2d(channels, width, KERNEL, padding=KERNEL // 2, bias=False)
            for _ in range(num_levels)
        )
        self.merge = nn.ModuleList(
            DR1Conv(width, width, KERNEL, param=param) for _ in range(num_levels)
        )
        for conv in [*self.reduce, *(m.conv for m in self.merge)]:
            he_normal_init(conv)
        self.norms = nn.ModuleList(norm_layer(width) for _ in range(num_levels))
        self.act = act_layer()
        self.aligned = aligned
        self.width = width

    def forward(
        self,
        levels: Sequence[Tensor],
        factors: Sequence[tuple[Tensor | None, Tensor | None]],
        out_size: Sequence[int],
    ) -> Tensor:
        """Merge coarse to fine.

        Args:
            levels: pyramid maps ``[B, channels, h_l, w_l]``, fine to coarse.
            factors: per level the raw DR1 factors ``(A_hat, B_hat)`` ``[B, W, h_l, w_l]``
                (None: that factor is 1).
            out_size: ``(h, w)`` of the output (at most twice the finest level's size).

        Returns:
            ``F`` ``[B, W, h, w]``.
        """
        if len(levels) != len(self.reduce) or len(factors) != len(self.reduce):
            raise ValueError(
                f"DR1MaskBasis: expected {len(self.reduce)} levels and factors, got "
                f"{len(levels)} and {len(factors)}"
            )
        merged: Tensor | None = None
        for lv in range(len(levels) - 1, -1, -1):
            x = self.reduce[lv](levels[lv])
            if merged is not None:
                x = x + upsample_to(merged, x.shape[-2:], aligned=self.aligned)
            a_raw, b_raw = factors[lv]
            merged = self.act(self.norms[lv](self.merge[lv](x, a_raw, b_raw)))
        assert merged is not None
        return upsample_to(merged, out_size, aligned=self.aligned)
