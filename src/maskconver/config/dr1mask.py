"""DR1Mask's sub-block (``model.dr1mask``): network, assignment, losses, inference and merge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from maskconver.config.checks import (
    FINITE,
    NON_NEGATIVE_INT,
    Check,
    ConfigError,
    check,
    checks,
    finite,
)

if TYPE_CHECKING:
    from maskconver.config.model import ModelConfig

AT_LEAST_ONE = check(lambda v: v >= 1, ">= 1", message="{key} must be >= 1, got {value}")
OUT_OF_RANGE = "{key} is out of range: {value!r}"


def _bounded(ok: Callable[[Any], bool]) -> dict[str, tuple[Check, ...]]:
    """A check whose failure reads ``<key> is out of range: <value>`` (DR1Mask's wording)."""
    return check(ok, "in range", message=OUT_OF_RANGE)


NON_NEGATIVE_WEIGHT = _bounded(lambda v: finite(v) and v >= 0)


@dataclass
class DR1MaskMergeConfig:
    """DR1Mask's panoptic merge.

    ``object_threshold`` is the detections' score threshold, ``min_area`` the segments' minimum
    area; ``overlap_threshold`` and ``mask_threshold`` apply to ``mode: paste``.
    """

    mode: Literal["argmax", "paste"] = "argmax"  # unified argmax, or Panoptic-FPN-style paste
    box_crop: bool = False  # argmax: an instance channel only competes inside its box
    # detections scoring below this are dropped
    object_threshold: float = field(default=0.01, metadata=FINITE)
    # a detection is kept iff its won area / own area exceeds this
    overlap_threshold: float = field(default=0.7, metadata=FINITE)
    min_area: int = field(default=256, metadata=NON_NEGATIVE_INT)  # pixels on the output canvas
    # mask probability that counts a pixel as a detection's own
    mask_threshold: float = field(default=0.5, metadata=FINITE)


@dataclass
class DR1MaskConfig:
    """DR1Mask (``model.meta_architecture: dr1mask``; ``docs/dr1mask.md``).

    The pyramid is ``model.decoder`` (``name: fpn``: ``channels``, ``min_level`` ..
    ``max_level``, ``norm``); ``model.num_proposals`` is K, the detections per image (and the
    instance slots in training).
    """

    # what the model is trained and evaluated for: panoptic (COCO panoptic data, PQ) or
    # instance segmentation (COCO instance JSON, mask AP; docs/dr1mask.md section 7)
    task: Literal["panoptic", "instance"] = "panoptic"
    # instance prediction module (paper 3.2.3, Table 4): vector embedding (D values per
    # instance), factored attention (K x D projection + K x rank factors) or BlendMask's full
    # K x R x R attention; the top layer's embedding width follows from it
    instance_module: Literal["vector", "factored", "full"] = "vector"
    attention_bases: int = field(default=4, metadata=AT_LEAST_ONE)  # K (BlendMask: 4)
    attention_size: int = field(default=14, metadata=AT_LEAST_ONE)  # R (BlendMask: 14)
    attention_rank: int = field(default=4, metadata=AT_LEAST_ONE)  # factored: rank (lost)
    # network (paper section 3.2)
    tower_convs: int = field(default=4, metadata=AT_LEAST_ONE)  # FCOS class / box towers
    # normalisation of the FCOS towers (group norm or batch norm)
    tower_norm: Literal["gn", "bn"] = "gn"
    gn_groups: int = 32  # groups of the towers' group norm
    # D: DR1Basis width = embedding size (Table 6: 64 for panoptic)
    basis_width: int = field(default=64, metadata=AT_LEAST_ONE)
    factors: Literal["both", "in", "out", "none"] = "both"  # DR1 factors from the top layer
    # DR1 factor parametrisation: 1 + x or 2 sigmoid(x)
    factor_param: Literal["one_plus", "two_sigmoid"] = "one_plus"
    aligned: bool = True  # aligned x2 + crop in DR1Basis (Table 5)
    # top-layer kernel (lost in the paper; BlendMask's top layer is 3x3)
    top_kernel: int = field(
        default=3,
        metadata=checks(
            AT_LEAST_ONE,
            check(lambda v: v % 2 == 1, "odd", message="{key} must be odd, got {value}"),
        ),
    )
    # classification bias init: -log((1 - p) / p)
    prior_prob: float = field(default=0.01, metadata=_bounded(lambda v: 0 < v < 1))
    # FCOS assignment and mask targets
    sizes_of_interest: list[float] = field(default_factory=lambda: [64, 128, 256, 512])
    # FCOS centre sampling radius (in strides)
    center_radius: float = field(default=1.5, metadata=_bounded(lambda v: finite(v) and v >= 0))
    mask_size: int = field(default=56, metadata=AT_LEAST_ONE)  # RoIAlign crops of F and targets
    target_stride: int = 4  # unified CE at this stride (a divisor of the basis stride)
    # losses
    focal_alpha: float = field(default=0.25, metadata=_bounded(lambda v: 0 <= v <= 1))
    # classification focal loss: gamma
    focal_gamma: float = field(default=2.0, metadata=_bounded(lambda v: finite(v) and v >= 0))
    # weight of the classification loss
    cls_weight: float = field(default=1.0, metadata=NON_NEGATIVE_WEIGHT)
    # weight of the GIoU box loss
    box_weight: float = field(default=1.0, metadata=NON_NEGATIVE_WEIGHT)
    # weight of the centerness loss
    centerness_weight: float = field(default=1.0, metadata=NON_NEGATIVE_WEIGHT)
    # weight of the instance mask loss
    mask_weight: float = field(default=1.0, metadata=NON_NEGATIVE_WEIGHT)
    # lost in the paper; BlendMask's semantic weight
    unified_weight: float = field(default=0.5, metadata=NON_NEGATIVE_WEIGHT)
    # inference
    pre_nms_topk: int = 1000
    # candidates before NMS (FCOS)
    score_threshold: float = field(default=0.05, metadata=_bounded(finite))
    # NMS IoU threshold
    nms_iou: float = field(default=0.6, metadata=_bounded(lambda v: 0 <= v <= 1))
    merge: DR1MaskMergeConfig = field(default_factory=DR1MaskMergeConfig)

    def check(self, model: ModelConfig) -> None:
        """Cross-field checks (DR1Mask's pyramid is the FPN of ``model.decoder``)."""
        d = model.decoder
        if d.name != "fpn":
            raise ConfigError(
                f"model.meta_architecture=dr1mask builds its pyramid as an FPN: set "
                f"model.decoder.name=fpn (got {d.name!r})"
            )
        levels = d.max_level - d.min_level + 1
        if len(self.sizes_of_interest) != levels - 1:
            raise ConfigError(
                f"model.dr1mask.sizes_of_interest needs {levels - 1} boundaries for the levels "
                f"{d.min_level}..{d.max_level}, got {self.sizes_of_interest}"
            )
        sizes = self.sizes_of_interest
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ConfigError(f"model.dr1mask.sizes_of_interest must ascend: {sizes}")
        basis_stride = 2 ** (d.min_level - 1)
        if self.target_stride < 1 or basis_stride % self.target_stride:
            raise ConfigError(
                f"model.dr1mask.target_stride must divide the basis stride {basis_stride}, "
                f"got {self.target_stride}"
            )
        if self.tower_norm == "gn" and (self.gn_groups < 1 or d.channels % self.gn_groups):
            raise ConfigError(
                f"model.dr1mask.gn_groups={self.gn_groups} must divide model.decoder.channels="
                f"{d.channels}"
            )
        if self.instance_module == "factored" and self.attention_rank > self.attention_size:
            raise ConfigError(
                f"model.dr1mask.attention_rank={self.attention_rank} must be <= "
                f"model.dr1mask.attention_size={self.attention_size}"
            )
        if self.pre_nms_topk < model.num_proposals:
            raise ConfigError(
                f"model.dr1mask.pre_nms_topk={self.pre_nms_topk} must be >= model.num_proposals="
                f"{model.num_proposals} (the detections are chosen among the candidates)"
            )
