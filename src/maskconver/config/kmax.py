"""kMaX-DeepLab's sub-block (``model.kmax``): network, losses with ReMaX, and merge.

``model.num_proposals`` is ``N``, the number of queries (cluster centres), and the cap on the
ground-truth masks of one training image; the backbone is ``model.backbone``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from maskconver.config.checks import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    UNIT,
    ConfigError,
    check,
)

if TYPE_CHECKING:
    from maskconver.config.model import ModelConfig

POSITIVE_LIST = check(lambda v: len(v) >= 1 and all(x >= 1 for x in v), "a list of ints >= 1")
COUNTS = check(lambda v: len(v) >= 1 and all(x >= 0 for x in v), "a list of ints >= 0")
STRIDES = check(
    lambda v: len(v) >= 1 and all(x >= 1 and x & (x - 1) == 0 for x in v),
    "a list of powers of two",
)
BELOW_ONE = check(lambda v: 0 <= v < 1, "in [0, 1)")


@dataclass
class KMaXLossConfig:
    """kMaX-DeepLab's losses (deeplab2's weights) and ReMaX's relaxations (off by default).

    ``activation`` is the mask activation of the mask-ID loss, the matching's and dice term's
    mask probabilities and ReMask's sigma (ReMaX Table 2): ``sigmoid`` the ReMaX paper's,
    ``softmax`` (over the queries at each pixel) deeplab2's.
    """

    # mask activation of the mask-ID loss, matching, dice and ReMask
    activation: Literal["sigmoid", "softmax"] = "sigmoid"
    pq_weight: float = field(default=3.0, metadata=NON_NEGATIVE)  # weight of the PQ-style loss
    # weight of the mask-ID cross-entropy
    mask_id_weight: float = field(default=0.3, metadata=NON_NEGATIVE)
    # weight of the instance discrimination loss
    instance_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    # kMaX's auxiliary semantic head (training only; 0 builds no head)
    semantic_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    # PQ-style terms: weight of the matched queries
    focal_alpha: float = field(default=0.75, metadata=UNIT)
    instance_points: int = field(default=4096, metadata=POSITIVE)  # sampled pixels
    semantic_points: int = field(default=4096, metadata=NON_NEGATIVE_INT)  # 0: every pixel
    semantic_channels: int = field(default=256, metadata=POSITIVE)  # width of semantic heads
    semantic_rates: list[int] = field(  # ASPP atrous rates of the semantic heads
        default_factory=lambda: [6, 12, 18], metadata=POSITIVE_LIST
    )
    # ReMaX: ReMask on the predictions of the first remask_stages decoder blocks (Table 3: 4
    # of 6), its per-stage semantic heads weighted remask_semantic_weight (0.5, section 4.2)
    remask_stages: int = field(default=0, metadata=NON_NEGATIVE_INT)
    # weight of ReMask's per-stage semantic heads (0.5 in ReMaX)
    remask_semantic_weight: float = field(default=0.5, metadata=NON_NEGATIVE)
    remask_identity: bool = True  # m * (1 + S) (Eq. 2); false: m * S (Table 5's control)
    reclass_eta: float = field(default=0.0, metadata=BELOW_ONE)  # ReClass (0.1 in the paper)


@dataclass
class KMaXMergeConfig:
    """The mask-transformer panoptic merge (``postprocess.merge``'s ``maskformer`` mode).

    A query's score is its class probability times its mask confidence (the mean mask
    probability over the pixels it wins at mask resolution); queries need
    ``score > object_threshold``; a segment keeps the won pixels with probability
    ``>= mask_threshold`` if they are ``>= overlap_threshold`` of its own mask.
    """

    # queries scoring below this are dropped
    object_threshold: float = field(default=0.4, metadata=UNIT)
    # a query is kept iff its won area / own area exceeds this
    overlap_threshold: float = field(default=0.8, metadata=UNIT)
    # mask probability that counts a pixel as a query's own
    mask_threshold: float = field(default=0.5, metadata=UNIT)


@dataclass
class KMaXConfig:
    """kMaX-DeepLab (``model.meta_architecture: kmax``; ``docs/kmax-remax.md``).

    The pixel decoder's stages run coarse to fine over the backbone's last
    ``len(decoder_channels)`` maps; ``transformer_blocks[i]`` blocks attend to the stage at
    stride ``transformer_strides[i]``.
    """

    # pixel-decoder width per stage, coarse to fine
    decoder_channels: list[int] = field(
        default_factory=lambda: [2048, 1024, 512, 256], metadata=POSITIVE_LIST
    )
    # pixel-decoder blocks per stage
    decoder_blocks: list[int] = field(default_factory=lambda: [1, 5, 1, 1], metadata=COUNTS)
    axial_stages: int = field(default=1, metadata=NON_NEGATIVE_INT)  # first stages: axial blocks
    axial_heads: int = field(default=8, metadata=POSITIVE)  # heads of the axial attention blocks
    axial_span: int = field(default=64, metadata=POSITIVE)  # relative-position bias span
    # transformer-decoder blocks per attended stage
    transformer_blocks: list[int] = field(default_factory=lambda: [2, 2, 2], metadata=COUNTS)
    # stride of the stage each group of transformer blocks attends to
    transformer_strides: list[int] = field(default_factory=lambda: [32, 16, 8], metadata=STRIDES)
    query_dim: int = field(default=256, metadata=POSITIVE)  # width of the object queries
    pixel_dim: int = field(default=128, metadata=POSITIVE)  # pixel features of the masks
    attention_heads: int = field(default=8, metadata=POSITIVE)  # heads of the transformer decoder
    # hidden width of the transformer's feed-forward layers
    ffn_dim: int = field(default=2048, metadata=POSITIVE)
    activation: Literal["relu", "gelu", "hardswish", "silu"] = "gelu"  # activation of the decoders
    loss: KMaXLossConfig = field(default_factory=KMaXLossConfig)
    merge: KMaXMergeConfig = field(default_factory=KMaXMergeConfig)

    def check(self, model: ModelConfig) -> None:
        """Cross-field checks (stage counts, strides, heads, ReMask stages)."""
        stages = len(self.decoder_channels)
        if len(self.decoder_blocks) != stages:
            raise ConfigError(
                f"model.kmax.decoder_blocks has {len(self.decoder_blocks)} entries for "
                f"{stages} decoder stages (model.kmax.decoder_channels)"
            )
        if len(self.transformer_blocks) != len(self.transformer_strides):
            raise ConfigError(
                "model.kmax.transformer_blocks and model.kmax.transformer_strides need one "
                f"entry each per stage, got {self.transformer_blocks} and "
                f"{self.transformer_strides}"
            )
        if self.query_dim % self.attention_heads:
            raise ConfigError(
                f"model.kmax.attention_heads={self.attention_heads} must divide "
                f"model.kmax.query_dim={self.query_dim}"
            )
        if self.axial_stages > stages:
            raise ConfigError(
                f"model.kmax.axial_stages={self.axial_stages} exceeds the {stages} decoder stages"
            )
        blocks = sum(self.transformer_blocks)
        if blocks < 1:
            raise ConfigError("model.kmax.transformer_blocks: at least one decoder block")
        if self.loss.remask_stages > blocks:
            raise ConfigError(
                f"model.kmax.loss.remask_stages={self.loss.remask_stages} exceeds the {blocks} "
                "transformer-decoder blocks"
            )
