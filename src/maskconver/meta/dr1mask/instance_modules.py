"""DR1Mask's instance prediction modules (paper section 3.2.3; design note 4.4).

Every module turns a location's instance embedding (the top layer's first ``embedding_dim``
channels) and the RoIAlign crop of the basis ``F`` in the instance's box (``[D, M, M]``) into
mask logits ``[M, M]``, and gives the D-wide dynamic column of the unified panoptic layer:

* ``VectorEmbedding`` (YOLACT-style; the paper's panoptic choice, Table 7): ``e`` has D values,
  ``mask = sum_d e_d crop_d``; the column is ``e`` itself. Per instance: D parameters.
* ``FullAttention`` (BlendMask's blender): the crop is projected to ``K`` bases by a static 1x1
  conv (BlendMask's basis head predicts K bases; here ``F`` is D wide and shared with the
  unified layer, so the K bases are a learned projection of it); ``e = [c | a]`` holds a D-wide
  unified column ``c`` and a ``K x R x R`` attention ``a`` (BlendMask: K = 4, R = 14, "196
  parameters per channel"); ``a`` is bilinearly upsampled to ``M x M``, softmaxed over K, and
  ``mask = sum_k softmax(a)_k * bases_k``. Per instance: ``D + K R^2`` values (``K R^2`` for
  the mask).
* ``FactoredAttention`` (the paper's instance-segmentation choice, Table 4): ``e = [W | s]``
  holds a dynamic 1x1 projection ``W`` (``K x D``) of the crop to K channels and ``K x r``
  attention factors; the attention of slice ``k`` is ``A_k = U_k diag(s_k) V_k^T`` with
  ``U_k, V_k`` (``R x r``) network parameters shared by all instances. ``A`` is then used as
  the full attention (upsampled, softmax over K, weighted sum of the projected crop). The
  unified column is the mean of the K projection kernels: the mask the instance would get from
  a uniform (position-free) attention, read on the whole ``F``. Per instance: ``K D + K r``.

Choices where the paper text is silent (its symbols were lost in extraction): the rank ``r``
(4: the design note's "K = 4 x rank 4 = 16" reading; ``r = R`` factors any attention exactly,
tested), the softmax over K and the bilinear upsampling of the factored attention (kept from
BlendMask, since factored attention replaces BlendMask's attention), and the unified columns of
the two attention modules (above).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.meta.dr1mask.roi_align import corner_shift, roi_align

BLENDMASK_BASES = 4  # K of BlendMask's blender
BLENDMASK_ATTENTION = 14  # R: BlendMask's attention side ("196 parameters per channel")
DEFAULT_RANK = 4  # r of the factored attention (lost in the paper text)


def blend(bases: Tensor, attention: Tensor) -> Tensor:
    """BlendMask's blender: ``sum_k softmax_k(up(attention))_k * bases_k``.

    Args:
        bases: ``[n, K, M, M]`` (or ``[1, K, M, M]``, shared by the n instances).
        attention: ``[n, K, R, R]`` per-instance attention logits.

    Returns:
        ``[n, M, M]`` mask logits.
    """
    size = bases.shape[-2:]
    if attention.shape[-2:] != size:
        attention = F.interpolate(attention, size=size, mode="bilinear", align_corners=False)
    return (attention.softmax(dim=1) * bases).sum(dim=1)


def project(kernels: Tensor, crops: Tensor) -> Tensor:
    """Dynamic 1x1 convolutions of crops: ``out[n, k] = sum_d kernels[n, k, d] crops[n, d]``.

    Args:
        kernels: ``[n, K, D]``.
        crops: ``[n, D, M, M]``, or ``[1, D, M, M]`` read by all n kernels.

    Returns:
        ``[n, K, M, M]``.
    """
    n, k, d = kernels.shape
    if crops.shape[0] == 1 and n != 1:
        size = crops.shape[-2:]
        return (kernels.reshape(n * k, d) @ crops[0].flatten(1)).view(n, k, *size)
    return torch.einsum("nkd,ndpq->nkpq", kernels, crops)


class InstanceModule(nn.Module):
    """Base class: ``embedding_dim`` values per location -> mask logits and unified column.

    Attributes:
        basis_width: D, the width of ``F`` and of the unified columns.
        embedding_dim: E, the instance embedding's width (the top layer's first channels).
        mask_parameters: of the E values, how many determine the mask (the per-instance count
            the paper's parameter accounting refers to).
        columns_are_embeddings: ``unified_column`` is the identity (E = D).
    """

    basis_width: int
    embedding_dim: int
    mask_parameters: int
    columns_are_embeddings: bool = False

    def mask_logits(self, embeddings: Tensor, crops: Tensor) -> Tensor:
        """``[n, E]`` embeddings and ``[n | 1, D, M, M]`` crops -> ``[n, M, M]`` mask logits."""
        raise NotImplementedError

    def unified_column(self, embeddings: Tensor) -> Tensor:
        """``[..., E]`` embeddings -> ``[..., D]`` dynamic columns of the unified layer."""
        raise NotImplementedError


class VectorEmbedding(InstanceModule):
    """YOLACT-style vector embedding: ``mask = sum_d e_d crop_d`` (no parameters).

    Args:
        basis_width: D.
    """

    def __init__(self, basis_width: int) -> None:
        super().__init__()
        self.basis_width = self.embedding_dim = self.mask_parameters = basis_width
        self.columns_are_embeddings = True

    def mask_logits(self, embeddings: Tensor, crops: Tensor) -> Tensor:
        """``[n, D]``, ``[n | 1, D, M, M]`` -> ``[n, M, M]``."""
        return project(embeddings[:, None, :], crops)[:, 0]

    def unified_column(self, embeddings: Tensor) -> Tensor:
        """The embedding itself."""
        return embeddings


class FullAttention(InstanceModule):
    """BlendMask's full attention over K bases projected from ``F`` (module docstring).

    Args:
        basis_width: D.
        num_bases: K (BlendMask: 4).
        attention_size: R, the attention's side (BlendMask: 14).
    """

    def __init__(
        self,
        basis_width: int,
        *,
        num_bases: int = BLENDMASK_BASES,
        attention_size: int = BLENDMASK_ATTENTION,
    ) -> None:
        super().__init__()
        self.basis_width = basis_width
        self.num_bases = num_bases
        self.attention_size = attention_size
        self.mask_parameters = num_bases * attention_size**2
        self.embedding_dim = basis_width + self.mask_parameters
        self.bases = nn.Conv2d(basis_width, num_bases, 1)

    def attention(self, embeddings: Tensor) -> Tensor:
        """``[n, E]`` -> ``[n, K, R, R]`` attention logits."""
        r = self.attention_size
        return embeddings[:, self.basis_width :].reshape(-1, self.num_bases, r, r)

    def mask_logits(self, embeddings: Tensor, crops: Tensor) -> Tensor:
        """``[n, E]``, ``[n | 1, D, M, M]`` -> ``[n, M, M]``."""
        return blend(self.bases(crops), self.attention(embeddings))

    def unified_column(self, embeddings: Tensor) -> Tensor:
        """The first D values."""
        return embeddings[..., : self.basis_width]


class FactoredAttention(InstanceModule):
    """DR1Mask's factored attention (module docstring).

    Args:
        basis_width: D.
        num_bases: K, the projected channels (BlendMask's 4).
        attention_size: R, the attention's side (14).
        rank: r, the factors per slice (``A_k = U_k diag(s_k) V_k^T``, ``U_k, V_k`` R x r).
    """

    def __init__(
        self,
        basis_width: int,
        *,
        num_bases: int = BLENDMASK_BASES,
        attention_size: int = BLENDMASK_ATTENTION,
        rank: int = DEFAULT_RANK,
    ) -> None:
        super().__init__()
        if not 1 <= rank <= attention_size:
            raise ValueError(f"rank must be in 1..{attention_size}, got {rank}")
        self.basis_width = basis_width
        self.num_bases = num_bases
        self.attention_size = attention_size
        self.rank = rank
        self.mask_parameters = num_bases * (basis_width + rank)
        self.embedding_dim = self.mask_parameters
        scale = 1.0 / math.sqrt(rank)  # entries of A ~ s at init
        self.u = nn.Parameter(torch.randn(num_bases, attention_size, rank) * math.sqrt(scale))
        self.v = nn.Parameter(torch.randn(num_bases, attention_size, rank) * math.sqrt(scale))

    def kernels(self, embeddings: Tensor) -> Tensor:
        """``[..., E]`` -> ``[..., K, D]`` dynamic projection kernels."""
        d, k = self.basis_width, self.num_bases
        return embeddings[..., : k * d].reshape(*embeddings.shape[:-1], k, d)

    def attention(self, embeddings: Tensor) -> Tensor:
        """``[n, E]`` -> ``[n, K, R, R]``: ``A_k = U_k diag(s_k) V_k^T``."""
        d, k = self.basis_width, self.num_bases
        sigma = embeddings[:, k * d :].reshape(-1, k, self.rank)
        return torch.einsum("kij,nkj,klj->nkil", self.u, sigma, self.v)

    def mask_logits(self, embeddings: Tensor, crops: Tensor) -> Tensor:
        """``[n, E]``, ``[n | 1, D, M, M]`` -> ``[n, M, M]``."""
        return blend(project(self.kernels(embeddings), crops), self.attention(embeddings))

    def unified_column(self, embeddings: Tensor) -> Tensor:
        """Mean of the K projection kernels ``[..., D]``."""
        return self.kernels(embeddings).mean(dim=-2)


class MaskQueries(NamedTuple):
    """The training call's mask work: RoIs (GT boxes) and the positive locations reading them.

    Attributes:
        boxes: ``[R, 4]`` ground-truth boxes (input pixels) of the instances with positives.
        roi_image: ``[R]`` int64 image of each RoI.
        roi_slot: ``[R]`` int64 instance slot of each RoI.
        image: ``[P]`` int64 image of each positive location, grouped by RoI.
        location: ``[P]`` int64 flattened location (all levels) of each positive.
        roi: ``[P]`` int64 RoI of each positive (ascending).
    """

    boxes: Tensor
    roi_image: Tensor
    roi_slot: Tensor
    image: Tensor
    location: Tensor
    roi: Tensor


def mask_queries(
    boxes: Tensor, instance_valid: Tensor, labels: Tensor, gt_index: Tensor
) -> MaskQueries:
    """``MaskQueries`` of a target batch (every positive of an instance that has a slot).

    Args:
        boxes: ``[B, S, 4]`` instance boxes.
        instance_valid: ``[B, S]`` bool.
        labels: ``[B, L]`` class per location (-1 background).
        gt_index: ``[B, L]`` slot per location (-1 background).
    """
    roi_image, roi_slot = torch.nonzero(instance_valid, as_tuple=True)
    roi_of = torch.full(instance_valid.shape, -1, dtype=torch.int64, device=boxes.device)
    roi_of[roi_image, roi_slot] = torch.arange(roi_image.numel(), device=boxes.device)
    image, location = torch.nonzero((labels >= 0) & (gt_index >= 0), as_tuple=True)
    roi = roi_of[image, gt_index[image, location]]
    keep = roi >= 0
    image, location, roi = image[keep], location[keep], roi[keep]
    order = torch.sort(roi, stable=True).indices
    return MaskQueries(
        boxes=boxes[roi_image, roi_slot],
        roi_image=roi_image,
        roi_slot=roi_slot,
        image=image[order],
        location=location[order],
        roi=roi[order],
    )


def positive_mask_logits(
    mask_logits: Callable[[Tensor, Tensor], Tensor],
    basis: Tensor,
    embeddings: Tensor,
    queries: MaskQueries,
    *,
    mask_size: int,
    basis_stride: int,
) -> Tensor:
    """Mask logits of every positive location in its instance's ground-truth box.

    Args:
        mask_logits: an ``InstanceModule.mask_logits``.
        basis: ``[B, D, h, w]`` ``F``.
        embeddings: ``[B, L, E]`` embeddings of all locations.
        queries: the RoIs and positives (``mask_queries``).
        mask_size: M.
        basis_stride: stride of ``F``.

    Returns:
        ``[P, M, M]`` in the order of ``queries.image``.
    """
    if queries.image.numel() == 0:
        return basis.new_zeros(0, mask_size, mask_size) + basis.sum() * 0.0
    crops = roi_align(
        basis,
        queries.boxes + corner_shift(basis_stride),
        queries.roi_image,
        mask_size,
        spatial_scale=1.0 / basis_stride,
        aligned=True,
    )  # [R, D, M, M]
    counts = torch.bincount(queries.roi, minlength=crops.shape[0]).tolist()
    picked = embeddings[queries.image, queries.location]  # [P, E]
    out, start = [], 0
    for r, n in enumerate(counts):
        if n:
            out.append(mask_logits(picked[start : start + n], crops[r : r + 1]))
        start += n
    return torch.cat(out)
