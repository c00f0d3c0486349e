"""The model section: the shared parts, and one sub-block per meta-architecture.

``model.meta_architecture`` selects the sub-block that is used (``model.maskconver``,
``model.dr1mask`` or ``model.kmax``); the backbone, the pixel decoder, the head settings the
decoders and DR1Mask's towers read, the class count, K and the batch-norm settings are shared.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal, Protocol

from maskconver.config.checks import POSITIVE, check, checks, finite
from maskconver.config.dr1mask import DR1MaskConfig
from maskconver.config.kmax import KMaXConfig
from maskconver.config.maskconver import MaskConverConfig

MetaArchitectureName = Literal["maskconver", "dr1mask", "kmax"]
META_ARCHITECTURE_NAMES: tuple[str, ...] = typing.get_args(MetaArchitectureName)

# K beyond this makes the per-slot tensors of one batch grow past any machine's memory
# (measured: num_proposals=100000 grew to 23.6 GB); the reference uses 50-256
MAX_PROPOSALS = 1000


@dataclass
class BackboneConfig:
    """Feature extractor. ``name`` is a key of ``build.BACKBONES``."""

    name: Literal[  # backbone, a key of build.BACKBONES
        "tiny",
        "mobilenet_mh",
        "mobilenetv2",
        "mobilenetv3_large",
        "mobilenetv3_small",
        "resnet50",
        "resnet50_unet",
    ] = "tiny"
    output_stride: int = 32  # 16 dilates the last stage (MobileNet-MH in the reference)
    weights: str | None = None  # torchvision-named weight file (.pth or .safetensors)
    width: int = 32  # tiny backbone: channels of the first stage
    # activation of the tiny backbone's blocks
    activation: Literal["relu", "gelu", "hardswish", "silu"] = "relu"
    frozen_bn: bool = False  # backbone BN frozen (reference ResNet-UNet panoptic config)
    drop_path_rate: float = 0.0  # ResNet-UNet stochastic-depth init rate (0.1 in the reference)
    unet_channels: list[int] = field(default_factory=lambda: [384, 384, 384])  # D5, D4, D3
    unet_repeats: list[int] = field(default_factory=lambda: [18, 1, 1])  # N5, N4, N3
    unet_se_ratio: float = 0.0625  # ConvNeXt-SE squeeze ratio of the expanded width


@dataclass
class DR1Config:
    """DR1Basis decoder (DR1Mask): dynamic rank-1 convs in a top-down merge to stride 4."""

    width: int = 64  # basis width D (DR1Mask Table 6: 64 best for panoptic)
    # which DR1 factors are dynamic: input side, output side or both
    factors: Literal["in", "out", "both"] = "both"
    # factor parametrisation: 1 + x or 2 sigmoid(x)
    param: Literal["one_plus", "two_sigmoid"] = "one_plus"
    # where the factors come from: the embedding tower, local features or none
    factor_source: Literal["embedding_tower", "local", "none"] = "embedding_tower"
    tower_convs: int = 2  # convs of the factor tower
    fusion: Literal["sum", "concat"] = "sum"  # concat: the factor-free control arm
    aligned: bool = True  # aligned x2 + crop (False: half-pixel resize, the Table 5 control)


@dataclass
class DecoderConfig:
    """Pixel decoder. ``name`` is a key of ``build.DECODERS``."""

    # pixel decoder, a key of build.DECODERS
    name: Literal["aspp", "maskconver_fpn", "fpn", "bifpn", "convnext_unet", "dr1basis"] = "aspp"
    channels: int = field(default=256, metadata=POSITIVE)  # decoder width
    # ASPP (DeepLabv3+)
    dilation_rates: list[int] = field(default_factory=lambda: [6, 12, 18])
    depthwise: bool = True  # ASPP: depthwise-separable atrous convs
    dropout: float = 0.0  # ASPP: dropout before the projection
    # FPN family
    min_level: int = 3
    max_level: int = 7  # FPN family: coarsest pyramid level
    # FPN family: merge of the top-down path and the lateral (sum or concat)
    fusion: Literal["sum", "concat"] = "sum"
    separable: bool = False  # FPN family: depthwise-separable smoothing convs
    kernel_size: int = 7  # smoothing kernel of the separable MaskConverFPN
    norm: Literal["bn", "ln"] = "bn"  # decoder normalisation (batch norm or layer norm)
    bifpn_repeats: int = 3  # BiFPN bidirectional layers
    # convnext_unet: ConvNeXt-SE blocks per level, coarsest first
    unet_repeats: list[int] = field(default_factory=lambda: [2, 1, 1])
    dr1: DR1Config = field(default_factory=DR1Config)


@dataclass
class HeadConfig:
    """The three light heads (center heatmap, center embedding, mask features).

    Shared: the decoders and DR1Mask's towers read ``norm`` and ``activation``.
    """

    channels: int = field(default=256, metadata=POSITIVE)  # width of the three heads
    num_convs: int = 2  # conv repetitions per head
    kernel_size: int = 7  # depthwise kernel; 0 means a dense 3x3 conv per repetition
    # head normalisation (also read by the decoders and DR1Mask's towers)
    norm: Literal["bn", "ln"] = "bn"
    # head activation (also read by the decoders and DR1Mask's towers)
    activation: Literal["relu", "gelu", "hardswish", "silu"] = "relu"
    low_level_channels: int = 256  # DeepLabv3+ sum-to-merge projection of backbone L3
    prior_prob: float = 0.1  # heatmap bias init: -log((1 - p) / p)
    # per-pixel semantic head on the mask features (ReMaX's auxiliary head, region-based stuff)
    semantic_channels: int = 64
    semantic_convs: int = 2  # convs of the semantic head


class _SubBlock(Protocol):
    """A meta-architecture's sub-block: a ``ModelConfig`` field named like the architecture."""

    def check(self, model: ModelConfig) -> None:
        """Cross-field checks (``model`` is the enclosing section)."""


@dataclass
class ModelConfig:
    """The model. ``num_classes`` None means: one class per dataset category.

    ``meta_architecture`` is a key of ``build.META_ARCHITECTURES``: it picks the model and the
    target generator, criterion and post-processor that go with it, and the sub-block of the
    same name (``maskconver``, ``dr1mask`` or ``kmax``) that configures them; the other
    sub-blocks are neither read nor checked.
    """

    # the model family: a key of build.META_ARCHITECTURES
    meta_architecture: MetaArchitectureName = "maskconver"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    num_classes: int | None = None  # class channels of the heads (null: one per dataset category)
    label_space: Literal["contiguous", "raw_ids"] = "contiguous"  # raw_ids: class = category id
    # K: top-K peaks (MaskConver) or detections (DR1Mask) at inference, slots in training
    num_proposals: int = field(
        default=50,
        metadata=checks(
            check(lambda v: v >= 1, ">= 1", message="{key} must be >= 1"),
            check(lambda v: v <= MAX_PROPOSALS, f"in [1, {MAX_PROPOSALS}]"),
        ),
    )
    bn_momentum: float = field(  # PyTorch convention (Keras 0.99)
        default=0.01, metadata=check(lambda v: finite(v) and 0 < v <= 1, "in (0, 1]")
    )
    # batch-norm epsilon
    bn_eps: float = field(default=1e-3, metadata=check(lambda v: finite(v) and v > 0, "> 0"))
    maskconver: MaskConverConfig = field(default_factory=MaskConverConfig)
    dr1mask: DR1MaskConfig = field(default_factory=DR1MaskConfig)
    kmax: KMaXConfig = field(default_factory=KMaXConfig)

    def unused_blocks(self) -> list[str]:
        """Dotted keys of the meta-architecture sub-blocks that ``meta_architecture`` leaves out."""
        return [
            f"model.{name}" for name in META_ARCHITECTURE_NAMES if name != self.meta_architecture
        ]

    def check(self) -> None:
        """The selected meta-architecture's cross-field checks (``ConfigError``)."""
        block: _SubBlock = getattr(self, self.meta_architecture)
        block.check(self)
