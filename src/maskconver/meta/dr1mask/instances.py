"""DR1Mask's instance-segmentation output: detections with crop masks pasted on the canvas.

For ``model.dr1mask.task: instance`` (paper section 3.2.3, the "instance-only mode"): every
detection of a thing class scoring above ``score_threshold`` becomes one instance with its
class, score, box and a full-canvas mask: its crop mask logits (the model's
``detection_masks``, from the configured instance module) pasted into its box and thresholded at
``mask_threshold``, as BlendMask and FCOS-based instance methods do. Instances may overlap;
there is no panoptic merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from maskconver.meta.dr1mask.postprocess import DR1MaskPostProcessor
from maskconver.postprocess.segments import UNUSED_CLASS, class_tables


@dataclass
class InstancePrediction:
    """One image's instances at its original size.

    Attributes:
        category_ids: ``[n]`` dataset category ids.
        scores: ``[n]`` detection scores, best first.
        boxes: ``[n, 4]`` float ``(x0, y0, x1, y1)`` in original pixels.
        masks: ``[n, H0, W0]`` bool masks.
    """

    category_ids: list[int]
    scores: list[float]
    boxes: np.ndarray
    masks: np.ndarray


class DR1MaskInstancePostProcessor:
    """``DR1MaskOutput`` (with ``detection_masks``) -> ``InstancePrediction`` per image.

    Args:
        class_to_category: class index -> dataset category id (-1 for unused indices).
        is_thing_class: per class index, True for things.
        score_threshold: detections need a score above it.
        mask_threshold: mask pixels need ``sigmoid(logit) >= mask_threshold``.
    """

    def __init__(
        self,
        *,
        class_to_category: Sequence[int],
        is_thing_class: Sequence[bool],
        score_threshold: float = 0.05,
        mask_threshold: float = 0.5,
    ) -> None:
        self.class_to_category, self.is_thing_class = class_tables(
            class_to_category, is_thing_class
        )
        self.usable = torch.tensor(
            [
                c != UNUSED_CLASS and t
                for c, t in zip(self.class_to_category, self.is_thing_class, strict=True)
            ]
        )
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold

    @torch.no_grad()
    def __call__(
        self,
        outputs: Any,
        valid_sizes: Sequence[tuple[int, int]],
        output_sizes: Sequence[tuple[int, int]],
        input_size: tuple[int, int],
    ) -> list[InstancePrediction]:
        """Instances of a batch (the inference output of a model built for the instance task).

        Args:
            outputs: ``DR1MaskOutput`` with ``boxes``, ``scores``, ``classes`` and
                ``detection_masks`` ``[B, K, M, M]``.
            valid_sizes: per image ``(h, w)`` of the resized image inside the padded input.
            output_sizes: per image original ``(H0, W0)``.
            input_size: ``(H, W)`` of the padded network input.
        """
        masks = outputs.detection_masks
        if outputs.scores is None or masks is None or masks.shape[-1] == 0:
            raise ValueError(
                "the instance task needs the model's detection_masks: build the model with "
                "model.dr1mask.task=instance"
            )
        results = []
        for b in range(outputs.scores.shape[0]):
            scores, classes = outputs.scores[b].float(), outputs.classes[b].long()
            keep = (scores > self.score_threshold) & self.usable.to(scores.device)[classes]
            chosen = torch.nonzero(keep).flatten()
            valid = (int(valid_sizes[b][0]), int(valid_sizes[b][1]))
            original = (int(output_sizes[b][0]), int(output_sizes[b][1]))
            boxes = outputs.boxes[b][chosen].float()
            probs = DR1MaskPostProcessor.instance_probabilities(
                masks[b][chosen].float(), boxes, valid, original
            )
            scale = boxes.new_tensor(
                [original[1] / valid[1], original[0] / valid[0]] * 2
            )  # input pixels -> original pixels
            results.append(
                InstancePrediction(
                    category_ids=[self.class_to_category[c] for c in classes[chosen].tolist()],
                    scores=scores[chosen].tolist(),
                    boxes=(boxes * scale).cpu().numpy(),
                    masks=(probs >= self.mask_threshold).cpu().numpy(),
                )
            )
        return results
