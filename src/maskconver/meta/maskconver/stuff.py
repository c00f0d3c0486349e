"""Region-based stuff (MaskConver Table 7): the semantic argmax on the pixels no thing owns."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from maskconver.postprocess.canvas import rescale_logits
from maskconver.postprocess.merge import DEFAULT_CHUNK


def semantic_stuff(
    logits: Tensor,
    owner: Tensor,
    is_stuff: Tensor,
    *,
    input_size: tuple[int, int],
    valid_size: tuple[int, int],
    output_size: tuple[int, int],
    min_area: int,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[np.ndarray, dict[int, float]]:
    """Region-based stuff: the semantic argmax on the pixels no thing owns.

    Args:
        logits: ``[C, hs, ws]`` semantic logits covering the padded input.
        owner: ``[H, W]`` the merge core's owner map (-1 = not owned by a thing).
        is_stuff: ``[C]`` bool.
        input_size: padded network input ``(H, W)``.
        valid_size: resized image inside it.
        output_size: original ``(H0, W0)`` (= ``owner``'s shape).
        min_area: a stuff class needs more than this many pixels.
        chunk: classes upsampled at a time (running argmax, memory ``chunk x H x W``).

    Returns:
        ``([H, W] int64 stuff class or -1, {class: score})`` where the score is the mean
        softmax probability of the class over its low-resolution argmax pixels.
    """
    best = torch.full(output_size, -math.inf, device=logits.device)
    label = torch.zeros(output_size, dtype=torch.int64, device=logits.device)
    for start in range(0, logits.shape[0], chunk):
        part = rescale_logits(logits[start : start + chunk], input_size, valid_size, output_size)
        value, index = part.max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        label = torch.where(better, index + start, label)
    free = (owner < 0) & is_stuff.to(label.device)[label]
    stuff_map = torch.where(free, label, torch.full_like(label, -1)).cpu().numpy()
    probs = logits.softmax(0)
    low_label = probs.argmax(0)
    scores: dict[int, float] = {}
    for cls in np.unique(stuff_map[stuff_map >= 0]).tolist():
        if int((stuff_map == cls).sum()) <= min_area:
            stuff_map[stuff_map == cls] = -1
            continue
        at = low_label == cls
        scores[int(cls)] = (
            float(probs[cls][at].mean()) if bool(at.any()) else float(probs[cls].max())
        )
    return stuff_map, scores
