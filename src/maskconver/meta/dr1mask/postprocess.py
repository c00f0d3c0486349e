"""DR1Mask's panoptic output: the unified layer's argmax, or a Panoptic-FPN-style paste.

``merge="argmax"`` (the paper's unified prediction, section 3.3: "minimal post-processing"):
the channels are the static stuff columns and one column per detection scoring above
``object_threshold`` (of a thing class); every pixel of the original canvas takes the channel of
largest unified logit, an instance channel takes its detection's class and score, and a channel
that wins ``min_area`` pixels or fewer is dropped (its pixels become void). The tensor core is
``unified.unified_merge`` (the same code runs inside the ONNX graph); numbering the segments is
the shared Python step ``postprocess.segments.number_segments``.

``merge="paste"`` (the alternative the issue asks for; BlendMask's panoptic combination, whose
thresholds DR1Mask's text does not give): each detection above ``object_threshold`` gets its
crop-based instance mask (RoIAlign of ``F`` in the predicted box, combined with its embedding by
the instance module: the model's ``detection_masks``; pasted into the box,
``prob >= mask_threshold``); masks are pasted best first, a mask
whose area already taken exceeds ``overlap_threshold`` of its own is skipped; stuff comes from the
unified argmax restricted to the free pixels whose winner is a stuff column, a stuff class
needing more than ``min_area`` pixels. Eager only (not exported).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver.data.types import SegmentInfo
from maskconver.meta.dr1mask.roi_align import corner_shift, roi_align
from maskconver.meta.dr1mask.unified import DEFAULT_CHUNK, unified_merge
from maskconver.postprocess.canvas import enlarge, working_size
from maskconver.postprocess.merge import MergeCore
from maskconver.postprocess.segments import (
    UNUSED_CLASS,
    PanopticPrediction,
    class_tables,
    number_segments,
)

Merge = Literal["argmax", "paste"]
MERGES = ("argmax", "paste")


class DR1MaskPostProcessor:
    """``DR1MaskOutput`` -> ``PanopticPrediction`` at each image's original size.

    Args:
        class_to_category: class index -> dataset category id (-1 for unused indices).
        is_thing_class: per class index, True for things.
        merge: ``"argmax"`` or ``"paste"`` (module docstring).
        object_threshold: detections need a score above it.
        overlap_threshold: paste: skip a mask whose taken part exceeds this fraction.
        min_area: a segment needs more than this many pixels (original canvas).
        mask_threshold: paste: mask pixels need ``prob >= mask_threshold``.
        basis_stride: stride of ``F`` and of the unified logits.
        mask_size: paste: side of the RoIAlign crops.
        chunk: unified channels resampled to the canvas at a time.
        box_crop: argmax: an instance channel competes only inside its detection's box.
        max_canvas_pixels: cap of the merge canvas (0: none); larger images merge scaled down
            and are enlarged (nearest), with a warning.
    """

    def __init__(
        self,
        *,
        class_to_category: Sequence[int],
        is_thing_class: Sequence[bool],
        merge: Merge = "argmax",
        object_threshold: float = 0.3,
        overlap_threshold: float = 0.4,
        min_area: int = 16,
        mask_threshold: float = 0.5,
        basis_stride: int = 4,
        mask_size: int = 56,
        chunk: int = DEFAULT_CHUNK,
        box_crop: bool = False,
        max_canvas_pixels: int = 0,
    ) -> None:
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        self.class_to_category, self.is_thing_class = class_tables(
            class_to_category, is_thing_class
        )
        used = [c != UNUSED_CLASS for c in self.class_to_category]
        self.static_valid = torch.tensor(
            [u and not t for u, t in zip(used, self.is_thing_class, strict=True)]
        )
        self.thing_usable = torch.tensor(
            [u and t for u, t in zip(used, self.is_thing_class, strict=True)]
        )
        self.merge = merge
        self.object_threshold = object_threshold
        self.overlap_threshold = overlap_threshold
        self.min_area = min_area
        self.mask_threshold = mask_threshold
        self.basis_stride = basis_stride
        self.mask_size = mask_size
        self.chunk = chunk
        self.box_crop = box_crop
        self.max_canvas_pixels = max_canvas_pixels

    def channels(self, scores: Tensor, classes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Valid / class / score / is-instance of the ``C + K`` unified channels of one image.

        Args:
            scores: ``[K]`` detection scores.
            classes: ``[K]`` int64 detection classes.
        """
        num_classes = self.static_valid.shape[0]
        device = scores.device
        detection_valid = (scores > self.object_threshold) & self.thing_usable.to(device)[classes]
        valid = torch.cat([self.static_valid.to(device), detection_valid])
        channel_classes = torch.cat([torch.arange(num_classes, device=device), classes.long()])
        channel_scores = torch.cat([torch.zeros(num_classes, device=device), scores.float()])
        is_instance = torch.cat(
            [
                torch.zeros(num_classes, dtype=torch.bool, device=device),
                torch.ones_like(classes).bool(),
            ]
        )
        return valid, channel_classes, channel_scores, is_instance

    def core(
        self,
        panoptic_logits: Tensor,
        scores: Tensor,
        classes: Tensor,
        valid_size: Sequence[Tensor | int],
        output_size: Sequence[Tensor | int],
        boxes: Tensor | None = None,
    ) -> MergeCore:
        """The argmax merge's tensor core for one image (traceable; see ``unified_merge``).

        ``boxes`` ``[K, 4]`` are the detections' (needed with ``box_crop``).
        """
        valid, channel_classes, channel_scores, is_instance = self.channels(scores, classes)
        channel_boxes = None
        if self.box_crop:
            if boxes is None:
                raise ValueError("box_crop needs the detection boxes")
            static = boxes.new_zeros(self.static_valid.shape[0], 4)
            channel_boxes = torch.cat([static, boxes.float()])
        return unified_merge(
            panoptic_logits,
            valid,
            channel_classes,
            channel_scores,
            is_instance,
            stride=self.basis_stride,
            valid_size=valid_size,
            output_size=output_size,
            min_area=self.min_area,
            chunk=self.chunk,
            boxes=channel_boxes,
        )

    @torch.no_grad()
    def __call__(
        self,
        outputs: Any,
        valid_sizes: Sequence[tuple[int, int]],
        output_sizes: Sequence[tuple[int, int]],
        input_size: tuple[int, int],
    ) -> list[PanopticPrediction]:
        """Panoptic maps of a batch of ``DR1MaskOutput`` (detection fields present).

        Args:
            outputs: the model's inference output.
            valid_sizes: per image ``(h, w)`` of the resized image inside the padded input.
            output_sizes: per image original ``(H0, W0)``.
            input_size: ``(H, W)`` of the padded network input.
        """
        if outputs.panoptic_logits is None or outputs.scores is None:
            raise ValueError("DR1MaskPostProcessor needs the detection outputs (detect=True)")
        batch = outputs.panoptic_logits.shape[0]
        if len(valid_sizes) != batch or len(output_sizes) != batch:
            raise ValueError(
                f"got {len(valid_sizes)} valid sizes and {len(output_sizes)} output sizes for "
                f"a batch of {batch}"
            )
        results = []
        for b in range(batch):
            valid_size = (int(valid_sizes[b][0]), int(valid_sizes[b][1]))
            original = (int(output_sizes[b][0]), int(output_sizes[b][1]))
            working = working_size(original, self.max_canvas_pixels)
            if self.merge == "argmax":
                core = self.core(
                    outputs.panoptic_logits[b].float(),
                    outputs.scores[b].float(),
                    outputs.classes[b],
                    valid_size,
                    working,
                    None if outputs.boxes is None else outputs.boxes[b],
                )
                prediction = self.finish(core)
            else:
                prediction = self._paste(outputs, b, valid_size, working)
            results.append(enlarge(prediction, original) if working != original else prediction)
        return results

    def finish(
        self,
        core: MergeCore,
        *,
        semantic_logits: Tensor | None = None,
        input_size: tuple[int, int] | None = None,
        valid_size: tuple[int, int] | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> PanopticPrediction:
        """Number the kept channels (the shared Python step; any backend's core)."""
        return number_segments(
            core, class_to_category=self.class_to_category, is_thing_class=self.is_thing_class
        )

    def crop_mask_logits(self, outputs: Any, b: int, detections: Tensor) -> Tensor:
        """``[n, M, M]`` mask logits of the chosen detections of image ``b`` inside their boxes.

        The model's ``detection_masks`` (any instance module); an output without them (built
        by hand, or by a model built for the argmax merge) gets the vector embedding's masks
        from ``F`` and the detection embeddings.
        """
        masks = outputs.detection_masks
        if masks is not None and masks.shape[-1] > 0:
            return masks[b][detections].float()
        basis = outputs.basis[b].float()
        embeddings = outputs.detection_embeddings[b][detections].float()
        if embeddings.shape[-1] != basis.shape[0]:
            raise ValueError(
                "the paste merge needs the model's detection_masks (a factored / full instance "
                "module); build the model with model.dr1mask.merge.mode=paste"
            )
        n = detections.numel()
        if n == 0:
            return basis.new_zeros(0, self.mask_size, self.mask_size)
        crops = roi_align(
            basis[None],
            outputs.boxes[b][detections].float() + corner_shift(self.basis_stride),
            torch.zeros(n, dtype=torch.int64, device=basis.device),
            self.mask_size,
            spatial_scale=1.0 / self.basis_stride,
        )
        return torch.einsum("nd,ndpq->npq", embeddings, crops)

    @staticmethod
    def instance_probabilities(
        mask_logits: Tensor,
        boxes: Tensor,
        valid_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> Tensor:
        """Crop-based masks of ``n`` detections pasted on the canvas.

        Args:
            mask_logits: ``[n, M, M]`` mask logits inside each box.
            boxes: ``[n, 4]`` boxes in input pixels.
            valid_size: resized image inside the padded input.
            output_size: ``(H0, W0)`` canvas.

        Returns:
            ``[n, H0, W0]`` mask probabilities (0 outside each box).
        """
        n = boxes.shape[0]
        height, width = output_size
        if n == 0:
            return mask_logits.new_zeros(0, height, width)
        probs = mask_logits.float().sigmoid()
        device = mask_logits.device
        # canvas pixel centre -> input coordinate -> position inside each box, in [-1, 1]
        ys = (torch.arange(height, device=device) + 0.5) * (valid_size[0] / height)
        xs = (torch.arange(width, device=device) + 0.5) * (valid_size[1] / width)
        x0, y0, x1, y1 = boxes.float().unbind(1)
        gy = 2 * (ys[None] - y0[:, None]) / (y1 - y0).clamp(min=1e-6)[:, None] - 1  # [n, H0]
        gx = 2 * (xs[None] - x0[:, None]) / (x1 - x0).clamp(min=1e-6)[:, None] - 1  # [n, W0]
        grid = torch.stack(
            [gx[:, None, :].expand(-1, height, -1), gy[:, :, None].expand(-1, -1, width)], dim=-1
        )
        return F.grid_sample(
            probs[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )[:, 0]

    def _paste(
        self, outputs: Any, b: int, valid_size: tuple[int, int], output_size: tuple[int, int]
    ) -> PanopticPrediction:
        """Panoptic-FPN-style combination for image ``b`` (module docstring)."""
        scores, classes = outputs.scores[b].float(), outputs.classes[b]
        valid, channel_classes, channel_scores, is_instance = self.channels(scores, classes)
        num_classes = self.static_valid.shape[0]
        detections = torch.nonzero(valid[num_classes:]).flatten()
        probs = self.instance_probabilities(
            self.crop_mask_logits(outputs, b, detections),
            outputs.boxes[b][detections].float(),
            valid_size,
            output_size,
        )
        panoptic = np.zeros(output_size, dtype=np.int32)
        taken = torch.zeros(output_size, dtype=torch.bool, device=probs.device)
        segments: list[SegmentInfo] = []
        for i, k in enumerate(detections.tolist()):  # detections are sorted by score
            mask = probs[i] >= self.mask_threshold
            area = int(mask.sum())
            if area == 0 or int((mask & taken).sum()) > self.overlap_threshold * area:
                continue
            mask &= ~taken
            if int(mask.sum()) <= self.min_area:
                continue
            taken |= mask
            cls = int(classes[k])
            segments.append(
                SegmentInfo(
                    id=len(segments) + 1,
                    category_id=self.class_to_category[cls],
                    score=float(scores[k]),
                    isthing=True,
                    area=int(mask.sum()),
                )
            )
            panoptic[mask.cpu().numpy()] = segments[-1].id
        core = unified_merge(
            outputs.panoptic_logits[b].float(),
            valid,
            channel_classes,
            channel_scores,
            is_instance,
            stride=self.basis_stride,
            valid_size=valid_size,
            output_size=output_size,
            min_area=-1,
            chunk=self.chunk,
        )
        winner = core.owner
        stuff_pixels = (winner >= 0) & (winner < num_classes) & ~taken
        stuff_map = torch.where(stuff_pixels, winner, torch.full_like(winner, -1)).cpu().numpy()
        mean_scores = core.scores.cpu().numpy()
        for cls in np.unique(stuff_map[stuff_map >= 0]).tolist():
            region = stuff_map == cls
            if int(region.sum()) <= self.min_area:
                continue
            segments.append(
                SegmentInfo(
                    id=len(segments) + 1,
                    category_id=self.class_to_category[cls],
                    score=float(mean_scores[cls]),
                    isthing=False,
                    area=int(region.sum()),
                )
            )
            panoptic[region] = segments[-1].id
        return PanopticPrediction(panoptic=panoptic, segments=segments)
