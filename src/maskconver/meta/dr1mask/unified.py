"""The unified panoptic layer (DR1Mask section 3.3): ``Y = [W_stuff, e_1 ... e_N]^T F``.

One 1x1 layer on the shared basis ``F`` ``[B, D, h, w]``: static, learned columns for the stuff
classes plus one dynamic column per thing instance. In training the column of ground-truth
instance ``i`` is the mean embedding of the locations FCOS assigned to it (``mean_embeddings``);
at inference it is the embedding of each kept detection. The loss is a per-pixel cross-entropy
over the ``C + N`` channels against "stuff class, or instance slot, or ignore"
(``unified_loss``); the panoptic map is the per-pixel argmax (``unified_merge``).

Static columns exist for every class index (``C`` of them) so the layer is built without knowing
which classes are things; the columns of thing classes are masked out (``static_valid``) in the
loss and at inference, so they never receive a gradient or win a pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.layers.resample import aligned_upsample, crop_to
from maskconver.postprocess.merge import MergeCore

IGNORE = -1
MASKED_LOGIT = -1e9  # logit of a masked channel (finite: running sums never see inf - inf)
DEFAULT_CHUNK = 8  # channels resampled to the canvas at a time


class UnifiedPanopticLayer(nn.Module):
    """Static columns (a 1x1 conv ``D -> C``) and the dynamic instance columns.

    Args:
        basis_width: D.
        num_classes: C, one static column per class index.
    """

    def __init__(self, basis_width: int, num_classes: int) -> None:
        super().__init__()
        self.static = nn.Conv2d(basis_width, num_classes, 1)
        nn.init.normal_(self.static.weight, std=0.01)
        assert self.static.bias is not None
        nn.init.zeros_(self.static.bias)

    def stuff_logits(self, basis: Tensor) -> Tensor:
        """``[B, D, h, w]`` -> static-column logits ``[B, C, h, w]``."""
        return self.static(basis)

    @staticmethod
    def instance_logits(columns: Tensor, basis: Tensor) -> Tensor:
        """Dynamic columns ``[B, N, D]`` times ``F`` ``[B, D, h, w]`` -> ``[B, N, h, w]``."""
        return torch.einsum("bnd,bdhw->bnhw", columns, basis)


def mean_embeddings(embeddings: Tensor, gt_index: Tensor, num_slots: int) -> tuple[Tensor, Tensor]:
    """Per ground-truth instance, the mean embedding of its assigned locations.

    Args:
        embeddings: ``[B, L, D]`` embedding of every location.
        gt_index: ``[B, L]`` int64 instance slot of each location, -1 for background.
        num_slots: N.

    Returns:
        ``(columns [B, N, D], counts [B, N])``; a slot without locations gets a zero column.
    """
    slots = torch.arange(num_slots, device=gt_index.device)
    onehot = (gt_index[:, None, :] == slots[None, :, None]).to(embeddings.dtype)  # [B, N, L]
    counts = onehot.sum(dim=2)
    columns = torch.bmm(onehot, embeddings) / counts.clamp(min=1)[:, :, None]
    return columns, counts


def masked_unified_logits(
    stuff_logits: Tensor, static_valid: Tensor, instance_logits: Tensor, instance_valid: Tensor
) -> Tensor:
    """``[B, C + N, h, w]`` logits with the masked channels at ``MASKED_LOGIT``.

    Args:
        stuff_logits: ``[B, C, h, w]``.
        static_valid: ``[C]`` bool (False for thing and unused class indices).
        instance_logits: ``[B, N, h, w]``.
        instance_valid: ``[B, N]`` bool.
    """
    batch = stuff_logits.shape[0]
    valid = torch.cat([static_valid[None].expand(batch, -1), instance_valid], dim=1)
    logits = torch.cat([stuff_logits, instance_logits], dim=1)
    return logits.masked_fill(~valid[:, :, None, None], MASKED_LOGIT)


def unified_loss(
    logits: Tensor, target: Tensor, *, basis_stride: int, target_stride: int
) -> Tensor:
    """Mean cross-entropy over the labelled pixels (0 when none is labelled).

    Args:
        logits: ``[B, C + N, h, w]`` at the basis stride (masked channels included).
        target: ``[B, hs, ws]`` int64 channel per pixel, -1 ignored, at ``target_stride``
            (a divisor of ``basis_stride``); pixel ``i`` of it is input pixel
            ``target_stride * i``, on which the aligned x``(basis_stride / target_stride)``
            upsample of the logits puts its pixel ``i`` too.
        basis_stride: stride of ``logits``.
        target_stride: stride of ``target``.
    """
    factor = basis_stride // target_stride
    if factor * target_stride != basis_stride:
        raise ValueError(
            f"target stride {target_stride} must divide the basis stride {basis_stride}"
        )
    if factor > 1:
        logits = crop_to(aligned_upsample(logits, factor), target.shape[-2:])
    if logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"unified_loss: logits {tuple(logits.shape[-2:])} and target "
            f"{tuple(target.shape[-2:])} differ in size"
        )
    labelled = (target != IGNORE).sum()
    loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")
    return loss / labelled.clamp(min=1)


def canvas_grid(
    feature_size: Sequence[int],
    stride: int,
    valid_size: Sequence[Tensor | int],
    output_size: Sequence[Tensor | int],
    device: torch.device,
) -> Tensor:
    """``grid_sample`` grid that reads a stride-``s`` map at every pixel of the output canvas.

    Output pixel ``(y, x)`` of the original image (``output_size``) is input pixel
    ``(y + 0.5) * valid / output - 0.5`` of the resized image (``valid_size``, top-left of the
    padded input), which is feature coordinate ``that / s`` in the corner convention (feature
    pixel ``i`` on input pixel ``s i``), read with ``align_corners=True``.

    Returns:
        ``[1, H0, W0, 2]`` normalised ``(x, y)``.
    """
    h, w = int(feature_size[0]), int(feature_size[1])

    def axis(valid: Tensor | int, out: Tensor | int, size: int) -> Tensor:
        steps = torch.arange(out, device=device).to(torch.float32)  # type: ignore[arg-type]
        ratio = torch.as_tensor(valid, device=device).float() / torch.as_tensor(out, device=device)
        index = ((steps + 0.5) * ratio - 0.5) / stride
        return 2.0 * index / max(size - 1, 1) - 1.0

    gy = axis(valid_size[0], output_size[0], h)
    gx = axis(valid_size[1], output_size[1], w)
    grid = torch.stack(
        [gx[None, :].expand(gy.shape[0], -1), gy[:, None].expand(-1, gx.shape[0])], dim=-1
    )
    return grid[None]


def canvas_coordinates(
    valid_size: Sequence[Tensor | int], output_size: Sequence[Tensor | int], device: torch.device
) -> tuple[Tensor, Tensor]:
    """Input-frame coordinates ``(y [H0], x [W0])`` of the output canvas's pixel centres."""

    def axis(valid: Tensor | int, out: Tensor | int) -> Tensor:
        steps = torch.arange(out, device=device).to(torch.float32)  # type: ignore[arg-type]
        ratio = torch.as_tensor(valid, device=device).float() / torch.as_tensor(out, device=device)
        return (steps + 0.5) * ratio

    return axis(valid_size[0], output_size[0]), axis(valid_size[1], output_size[1])


def unified_merge(
    logits: Tensor,
    valid: Tensor,
    classes: Tensor,
    scores: Tensor,
    is_instance: Tensor,
    *,
    stride: int,
    valid_size: Sequence[Tensor | int],
    output_size: Sequence[Tensor | int],
    min_area: int,
    chunk: int = DEFAULT_CHUNK,
    boxes: Tensor | None = None,
) -> MergeCore:
    """Per-pixel argmax of one image's unified logits on its original canvas (traceable).

    Every output pixel goes to the valid channel of largest logit (bilinear, corner-aligned
    resampling of the stride-``s`` logits); a channel is kept iff it wins more than ``min_area``
    pixels (the minimal clean-up), the pixels of dropped channels become void. An instance
    channel scores its detection's score; a stuff channel the mean softmax probability over the
    pixels it wins. With ``boxes``, an instance channel competes only inside its detection's box
    (crop-then-segment, as the crop-based instance masks; elsewhere it is masked).

    Args:
        logits: ``[N, h, w]`` unified logits (static columns, then detections).
        valid: ``[N]`` bool.
        classes: ``[N]`` int64 class index of each channel.
        scores: ``[N]`` detection score of instance channels (ignored for stuff).
        is_instance: ``[N]`` bool.
        stride: stride of ``logits`` in input pixels.
        valid_size: ``(h, w)`` of the resized image inside the padded input.
        output_size: ``(H0, W0)`` of the original image.
        min_area: a kept channel wins more pixels than this.
        chunk: channels resampled at a time (memory ``chunk x H0 x W0``).
        boxes: ``[N, 4]`` boxes in input pixels of the instance channels (other rows unused),
            or None (no box restriction).

    Returns:
        ``MergeCore`` over the ``N`` channels (``owner [H0, W0]``, -1 void).
    """
    num = logits.shape[0]
    grid = canvas_grid(logits.shape[-2:], stride, valid_size, output_size, logits.device)
    ys, xs = canvas_coordinates(valid_size, output_size, logits.device)
    best = winner = total = None
    for start in range(0, num, chunk):
        part = F.grid_sample(
            logits[None, start : start + chunk].float(),
            grid,
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )[0]
        part = part.masked_fill(~valid[start : start + chunk, None, None], MASKED_LOGIT)
        if boxes is not None:
            b = boxes[start : start + chunk].float()
            inside = ((ys[None, :] >= b[:, 1, None]) & (ys[None, :] <= b[:, 3, None]))[
                :, :, None
            ] & ((xs[None, :] >= b[:, 0, None]) & (xs[None, :] <= b[:, 2, None]))[:, None, :]
            outside = is_instance[start : start + chunk, None, None] & ~inside
            part = part.masked_fill(outside, MASKED_LOGIT)
        value, index = part.max(dim=0)
        if best is None or winner is None or total is None:
            best, winner = value, index
            total = torch.exp(part - value[None]).sum(0)
            continue
        new_best = torch.maximum(best, value)
        total = total * torch.exp(best - new_best) + torch.exp(part - new_best[None]).sum(0)
        winner = torch.where(value > best, index + start, winner)
        best = new_best
    assert winner is not None and total is not None
    flat = winner.flatten()
    area = torch.zeros(num, dtype=torch.int64, device=logits.device).scatter_add(
        0, flat, torch.ones_like(flat)
    )
    prob_sum = torch.zeros(num, device=logits.device).scatter_add(0, flat, (1.0 / total).flatten())
    keep = valid & (area > min_area)
    in_segment = keep[winner]
    owner = torch.where(in_segment, winner, torch.full_like(winner, -1))
    mean_prob = prob_sum / area.clamp(min=1).to(prob_sum.dtype)
    channel_scores = torch.where(is_instance, scores.float(), mean_prob)
    return MergeCore(owner, keep, classes, channel_scores, area * keep.long())
