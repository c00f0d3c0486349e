"""MaskConver's sub-block (``model.maskconver``): its model fields, targets, loss and merge.

Where the MaskConver paper and the official TensorFlow code differ, the choice is a named field
here (see ``docs/fidelity.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from maskconver.config.checks import (
    FINITE,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    ConfigError,
    check,
    finite,
)

if TYPE_CHECKING:
    from maskconver.config.model import ModelConfig


@dataclass
class TargetConfig:
    """How panoptic labels become center heatmaps and mask slots."""

    thing_center: Literal["box", "mass"] = "box"  # box: reference single-scale; mass: paper
    stuff_center: Literal["island", "mass"] = "island"  # island: dilated-island procedure
    # centers per stuff segment (island procedure)
    max_stuff_centers: int = field(default=1, metadata=POSITIVE)
    # square dilation of the island procedure (3 x 21x21 max-pools)
    stuff_dilation: int = field(default=61, metadata=POSITIVE)
    min_stuff_area: int = field(default=1024, metadata=NON_NEGATIVE_INT)  # input pixels
    # minimum IoU that sets the center Gaussian's radius (CenterNet)
    gaussian_iou: float = field(
        default=0.7, metadata=check(lambda v: finite(v) and 0 < v < 1, "in (0, 1)")
    )
    # mask targets / loss at input_size / mask_stride (1 = reference)
    mask_stride: int = field(
        default=1, metadata=check(lambda v: v >= 1, ">= 1", message="{key} must be >= 1")
    )
    # multi-scale level assignment by half box diagonal, in input pixels (inclusive bounds)
    level_low: list[float] = field(default_factory=lambda: [0, 40, 80, 160, 320])
    # multi-scale level assignment: upper bounds (inclusive) per level
    level_high: list[float] = field(default_factory=lambda: [64, 128, 256, 512, 1e7])
    crowd_as_ignore: bool = True  # crowd pixels are ignored by every loss


@dataclass
class LossConfig:
    """Loss weights (paper 1 / 10 / 10; reference MobileNet configs 1 / 5 / 5) and ReMaX.

    ReMaX (training only, ``losses/remax.py``): ``semantic_weight > 0`` adds the auxiliary
    semantic head on the mask features (0.5 in ReMaX); ``remask`` relaxes the mask logits in the
    loss by ``1 + S``; ``reclass_eta > 0`` softens the heatmap targets of overlapped classes.
    """

    # weight of the center-heatmap focal loss
    center_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    # weight of the mask binary cross-entropy
    bce_weight: float = field(default=5.0, metadata=NON_NEGATIVE)
    dice_weight: float = field(default=5.0, metadata=NON_NEGATIVE)  # weight of the mask dice loss
    focal_alpha: float = 2.0  # center focal loss: alpha (CenterNet's exponent on the prediction)
    focal_beta: float = 4.0  # center focal loss: beta (exponent on 1 - Gaussian target)
    dice_mode: Literal["adaptive", "plain"] = "adaptive"  # 1 - d exp(1 - d) vs 1 - d
    semantic_weight: float = field(  # 0: no semantic head is built
        default=0.0, metadata=check(lambda v: not v < 0, ">= 0", message="{key} must be >= 0")
    )
    # ReMaX ReMask: relax mask logits by 1 + S in the loss (and the mask-ID CE)
    remask: Literal["off", "literal", "literal+maskid"] = "off"
    remask_detach: bool = True  # stop-gradient through S (ReMaX Table 7)
    remask_source: Literal["learned", "ground_truth"] = "learned"  # Table 7's GT control
    remask_identity: bool = True  # m * (1 + S); False: m * S (Table 5)
    maskid: bool = False  # softmax mask-ID CE over the K slots without relaxation
    # weight of the mask-ID cross-entropy
    maskid_weight: float = field(default=0.3, metadata=NON_NEGATIVE)
    reclass_eta: float = field(  # 0 = off; ReMaX's default 0.1
        default=0.0, metadata=check(lambda v: 0.0 <= v < 1.0, "in [0, 1)")
    )
    reclass_splat: bool = False  # splat the soft targets with each slot's Gaussian


@dataclass
class MaskConverMergeConfig:
    """The panoptic merge (reference MobileNet: 0.01 / 0.7 / 256)."""

    # panoptic merge: reference (TF MaskConver) or maskformer
    mode: Literal["reference", "maskformer"] = "reference"
    # proposals scoring below this are dropped
    object_threshold: float = field(default=0.01, metadata=FINITE)
    # a proposal is kept iff its won area / own area exceeds this
    overlap_threshold: float = field(default=0.7, metadata=FINITE)
    min_area: int = field(default=256, metadata=NON_NEGATIVE_INT)  # pixels on the output canvas
    # mask probability that counts a pixel as a proposal's own
    mask_threshold: float = field(default=0.5, metadata=FINITE)
    # fast: winners and own areas at mask resolution, the owner map refined on the canvas (no
    # [K, H, W] tensor); exact: every mask upsampled to the canvas (docs/merge.md compares them)
    algorithm: Literal["exact", "fast"] = field(
        default="fast", metadata=check(lambda v: v in ("exact", "fast"), "'exact' or 'fast'")
    )


@dataclass
class MaskConverConfig:
    """MaskConver (``model.meta_architecture: maskconver``).

    Single-scale: centers at ``level``, mask features at ``mask_level`` (default ``level``).
    Multi-scale: centers at ``min_level..max_level``, mask features at ``pixel_level``.
    """

    embedding_dim: int = field(default=256, metadata=POSITIVE)  # mask-embedding width
    # 256 single-scale reference, 1024 multi-scale reference
    mlp_hidden: int = field(default=256, metadata=POSITIVE)
    mlp_activation: Literal["relu", "gelu"] = "relu"  # activation of the embedding MLP
    # class-embedding fusion: mul (reference single-scale), add (paper / multi-scale), none (no
    # class embedding: MaskConver Table 4's ablation)
    fusion: Literal["mul", "add", "none"] = "mul"
    # center: stuff classes get centers like things; region: stuff comes from a per-pixel
    # semantic head's argmax, things from centers (MaskConver Table 7's "region-based" row)
    stuff_mode: Literal["center", "region"] = "center"
    multiscale: bool = False  # centers at levels min_level..max_level, mask features at pixel_level
    level: int = 3  # single-scale: level of centers (and of the mask features by default)
    # single-scale: level of the mask features (pixel head), finer than the centers' if set,
    # as the multi-scale reference does with stride-4 masks; None: level. A pyramid decoder
    # then reaches down to it; dr1basis assigns the heads' levels itself (stride 4);
    # multi-scale models read pixel_level instead
    mask_level: int | None = None
    min_level: int = 3  # multi-scale: finest center level
    max_level: int = 7  # multi-scale: coarsest center level
    pixel_level: int = 2  # multi-scale mask-feature level
    # peak scores and mask probabilities by relu6(x + 3) / 6 (the reference's hardware path)
    hard_sigmoid: bool = False
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    merge: MaskConverMergeConfig = field(default_factory=MaskConverMergeConfig)

    def check(self, model: ModelConfig) -> None:
        """Cross-field checks of MaskConver's settings (``model`` is the enclosing section)."""
        key = "model.maskconver"
        if self.multiscale and not (self.pixel_level <= self.min_level <= self.max_level):
            raise ConfigError(f"{key}: need pixel_level <= min_level <= max_level for multiscale")
        if not self.multiscale and self.mask_level is not None and self.mask_level > self.level:
            raise ConfigError(
                f"{key}.mask_level: the mask features cannot be coarser than the centers: need "
                f"mask_level <= level (got mask_level {self.mask_level}, level {self.level})"
            )
        t = self.targets
        if self.multiscale:
            n_levels = self.max_level - self.min_level + 1
            if len(t.level_low) != n_levels or len(t.level_high) != n_levels:
                raise ConfigError(
                    f"{key}.targets.level_low/level_high need {n_levels} entries "
                    f"(levels {self.min_level}..{self.max_level})"
                )
        loss = self.loss
        if self.stuff_mode == "region" and loss.semantic_weight <= 0:
            raise ConfigError(
                f"{key}.stuff_mode=region predicts stuff with a semantic head: set "
                f"{key}.loss.semantic_weight > 0 (e.g. 1.0)"
            )
        has_semantic = loss.semantic_weight > 0
        if loss.remask != "off" and loss.remask_source == "learned" and not has_semantic:
            raise ConfigError(
                f"{key}.loss.remask={loss.remask} relaxes with a learned semantic map: set "
                f"{key}.loss.semantic_weight > 0 (ReMaX uses 0.5) or "
                f"{key}.loss.remask_source=ground_truth"
            )
