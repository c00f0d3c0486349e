"""kMaX-DeepLab's transformer decoder: k-means cross-attention, self-attention, FFN, predictor.

Queries are ``N`` cluster centres of width ``D`` (``[B, N, D]``). Each block (kMaX-DeepLab
section 3.2; the design note section 1.1):

1. **predict**: the block's predictor turns the current centres into class logits
   ``[B, N, C + 1]`` and mask logits ``[B, N, h4, w4]`` (dot products with the normalised
   stride-4 pixel features); this is the block's auxiliary prediction;
2. **k-means cross-attention**: every pixel of the block's pixel-decoder map is assigned to the
   centre whose mask logit is largest there (a cluster-wise argmax over the ``N`` centres
   instead of a spatial softmax over pixels; the mask logits are resized to the map first), and
   each centre moves by the sum of its pixels' values (a 1x1 projection of the map), batch-
   normed: ``C <- C + BN(onehot(argmax_N M)^T V)``;
3. **self-attention** among the centres and 4. an **FFN**, each with a residual and a norm.

Norms over the query axis are batch norms over ``D`` (kMaX's), applied to ``[B, N, D]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.layers.types import ActLayer

VOID_PRIOR = 0.9  # initial softmax probability of "void" (deeplab2's class-head bias)
MASK_LOGIT_GAMMA = 0.1  # initial scale of the mask-logit batch norm


class QueryNorm(nn.Module):
    """Batch norm over the channels of ``[B, N, D]`` query tensors.

    Args:
        dim: ``D``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, D]`` -> ``[B, N, D]``."""
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class KMaXPredictor(nn.Module):
    """Class and mask heads of one set of cluster centres.

    Class logits: ``Linear(D, C + 1)`` whose bias starts at softmax "void" probability 0.9.
    Mask logits: the mask kernel ``BN(Linear(D, E))`` dotted with the pixel features
    (``[B, E, h4, w4]``, already batch-normed and L2-normalised), then one batch norm over all
    mask logits with its scale initialised to 0.1.

    Args:
        query_dim: ``D``.
        pixel_dim: ``E``.
        num_classes: ``C`` (the void column is added).
    """

    def __init__(self, query_dim: int, pixel_dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(query_dim, num_classes + 1)
        nn.init.zeros_(self.classifier.bias)
        with torch.no_grad():  # softmax([0] * C + [b]) has void probability VOID_PRIOR
            self.classifier.bias[-1] = math.log(VOID_PRIOR * num_classes / (1.0 - VOID_PRIOR))
        self.kernel = nn.Linear(query_dim, pixel_dim, bias=False)
        self.kernel_norm = QueryNorm(pixel_dim)
        self.logit_norm = nn.BatchNorm2d(1)
        nn.init.constant_(self.logit_norm.weight, MASK_LOGIT_GAMMA)

    def forward(self, queries: Tensor, pixel_features: Tensor) -> tuple[Tensor, Tensor]:
        """Queries ``[B, N, D]``, pixels ``[B, E, h, w]`` -> ``[B, N, C + 1]``, ``[B, N, h, w]``."""
        class_logits = self.classifier(queries)
        kernels = self.kernel_norm(self.kernel(queries))  # [B, N, E]
        masks = torch.einsum("bne,behw->bnhw", kernels, pixel_features)
        batch, num, height, width = masks.shape
        masks = self.logit_norm(masks.reshape(batch, 1, num, height * width))
        return class_logits, masks.reshape(batch, num, height, width)


class KMeansCrossAttention(nn.Module):
    """The k-means update of the centres from a hard pixel-to-centre assignment.

    Args:
        in_channels: channels of the pixel-decoder map the block attends to.
        query_dim: ``D``.
    """

    def __init__(self, in_channels: int, query_dim: int) -> None:
        super().__init__()
        self.value = nn.Sequential(
            nn.Conv2d(in_channels, query_dim, 1, bias=False), nn.BatchNorm2d(query_dim)
        )
        self.norm = QueryNorm(query_dim)

    @staticmethod
    def assignment(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
        """One-hot cluster assignment ``[B, N, h*w]`` of every pixel of a ``size`` map.

        The mask logits ``[B, N, h4, w4]`` are resized (bilinear) to ``size`` and each pixel
        goes to its ``argmax`` over the ``N`` centres (ties: the lowest index). No gradient.
        """
        logits = mask_logits.detach()
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        winner = logits.flatten(2).argmax(1)  # [B, h*w]
        return F.one_hot(winner, logits.shape[1]).transpose(1, 2).to(mask_logits.dtype)

    def forward(self, queries: Tensor, features: Tensor, mask_logits: Tensor) -> Tensor:
        """Centres ``[B, N, D]`` moved by their assigned pixels of ``features [B, Ci, h, w]``."""
        values = self.value(features).flatten(2)  # [B, D, h*w]
        onehot = self.assignment(mask_logits, (features.shape[-2], features.shape[-1]))
        update = torch.einsum("bnp,bdp->bnd", onehot, values)
        return queries + self.norm(update)


class QuerySelfAttention(nn.Module):
    """Multi-head self-attention among the centres, residual, then norm.

    Args:
        dim: ``D``.
        num_heads: heads (must divide ``D``).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"QuerySelfAttention: {num_heads} heads must divide {dim}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.norm = QueryNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, D]`` -> ``[B, N, D]``."""
        batch, num, dim = x.shape
        qkv = self.qkv(x).reshape(batch, num, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, heads, N, d]
        logits = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
        mixed = (logits.softmax(-1) @ value).transpose(1, 2).reshape(batch, num, dim)
        return self.norm(x + self.out(mixed))


class FeedForward(nn.Module):
    """``norm(x + Linear(act(Linear(x))))`` over the centres.

    Args:
        dim: ``D``.
        hidden: the FFN's inner width.
        act_layer: activation constructor.
    """

    def __init__(self, dim: int, hidden: int, act_layer: ActLayer) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), act_layer(), nn.Linear(hidden, dim))
        self.norm = QueryNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, D]`` -> ``[B, N, D]``."""
        return self.norm(x + self.body(x))


class KMaXBlock(nn.Module):
    """One kMaX transformer-decoder block (see the module docstring).

    Args:
        in_channels: channels of the pixel-decoder map this block attends to.
        query_dim: ``D``.
        pixel_dim: ``E``, the pixel-feature width of the masks.
        num_classes: ``C``.
        num_heads: self-attention heads.
        ffn_dim: the FFN's inner width.
        act_layer: activation constructor.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        query_dim: int,
        pixel_dim: int,
        num_classes: int,
        num_heads: int,
        ffn_dim: int,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        self.predictor = KMaXPredictor(query_dim, pixel_dim, num_classes)
        self.cross = KMeansCrossAttention(in_channels, query_dim)
        self.attention = QuerySelfAttention(query_dim, num_heads)
        self.ffn = FeedForward(query_dim, ffn_dim, act_layer)

    def forward(
        self, queries: Tensor, features: Tensor, pixel_features: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One block.

        Args:
            queries: ``[B, N, D]`` cluster centres.
            features: ``[B, Ci, h, w]`` the pixel-decoder map of this block.
            pixel_features: ``[B, E, h4, w4]`` normalised pixel features.

        Returns:
            Updated centres ``[B, N, D]``, and this block's prediction: class logits
            ``[B, N, C + 1]`` and mask logits ``[B, N, h4, w4]``.
        """
        class_logits, mask_logits = self.predictor(queries, pixel_features)
        queries = self.cross(queries, features, mask_logits)
        return self.ffn(self.attention(queries)), class_logits, mask_logits
