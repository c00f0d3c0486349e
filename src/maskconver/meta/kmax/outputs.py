"""What the kMaX-DeepLab network returns (``KMaXOutput``), in train and eval mode."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class KMaXOutput(NamedTuple):
    """The model's forward output, identical in train and eval mode.

    ``N`` is the number of queries (cluster centres), ``C`` the number of classes; the class
    logits have ``C + 1`` columns, the last one "void" (no object). ``h4 x w4`` is the mask
    resolution (stride 4 of the padded input).

    Attributes:
        class_logits: ``[B, N, C + 1]`` final class logits (void last).
        mask_logits: ``[B, N, h4, w4]`` final mask logits.
        pixel_features: ``[B, D, h4, w4]`` the normalised pixel features (batch-normed, then
            unit L2 norm over ``D``) the mask logits are dot products with; the instance
            discrimination loss reads them.
        aux_class_logits: one ``[B, N, C + 1]`` per transformer-decoder block (the prediction
            each block's k-means assignment was made from), first block first.
        aux_mask_logits: one ``[B, N, h4, w4]`` per transformer-decoder block.
        stage_features: one ``[B, C_i, h_i, w_i]`` per transformer-decoder block: the
            pixel-decoder map that block cross-attends to (its keys are computed from it);
            ReMaX's per-stage semantic heads read it.
        backbone_features: the backbone's maps, fine to coarse (kMaX's auxiliary semantic head
            reads the coarsest and two finer ones).
    """

    class_logits: Tensor
    mask_logits: Tensor
    pixel_features: Tensor
    aux_class_logits: tuple[Tensor, ...]
    aux_mask_logits: tuple[Tensor, ...]
    stage_features: tuple[Tensor, ...]
    backbone_features: tuple[Tensor, ...]
