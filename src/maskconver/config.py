"""Typed configuration: dataclass defaults, one YAML preset, ``--set a.b=c`` overrides.

``load_config(preset_or_path, overrides)``:

1. starts from the dataclass defaults below;
2. merges ONE YAML file (a preset name from ``maskconver/configs/`` or a path);
3. applies ``a.b.c=value`` overrides (values parsed with ``yaml.safe_load``);
4. rejects unknown keys with a close-match hint, and type-checks every value.

Only ``build.py``, ``engine/`` and ``commands/`` read a ``Config``; modules never do.
Where the MaskConver paper and the official TensorFlow code differ, the choice is a named field
here (see ``docs/fidelity.md``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from maskconver.errors import MaskconverError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class BackboneConfig:
    """Feature extractor. ``name`` is a key of ``build.BACKBONES``."""

    name: Literal[
        "tiny", "mobilenet_mh", "mobilenetv2", "mobilenetv3_large", "resnet50", "resnet50_unet"
    ] = "tiny"
    output_stride: int = 32  # 16 dilates the last stage (MobileNet-MH in the reference)
    weights: str | None = None  # torchvision-named weight file (.pth or .safetensors)
    width: int = 32  # tiny backbone: channels of the first stage
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
    factors: Literal["in", "out", "both"] = "both"
    param: Literal["one_plus", "two_sigmoid"] = "one_plus"
    factor_source: Literal["embedding_tower", "local", "none"] = "embedding_tower"
    tower_convs: int = 2
    fusion: Literal["sum", "concat"] = "sum"  # concat: the factor-free control arm
    aligned: bool = True  # aligned x2 + crop (False: half-pixel resize, the Table 5 control)


@dataclass
class DecoderConfig:
    """Pixel decoder. ``name`` is a key of ``build.DECODERS``."""

    name: Literal["aspp", "maskconver_fpn", "fpn", "bifpn", "convnext_unet", "dr1basis"] = "aspp"
    channels: int = 256
    # ASPP (DeepLabv3+)
    dilation_rates: list[int] = field(default_factory=lambda: [6, 12, 18])
    depthwise: bool = True
    dropout: float = 0.0
    # FPN family
    min_level: int = 3
    max_level: int = 7
    fusion: Literal["sum", "concat"] = "sum"
    separable: bool = False
    kernel_size: int = 7  # smoothing kernel of the separable MaskConverFPN
    norm: Literal["bn", "ln"] = "bn"
    bifpn_repeats: int = 3  # BiFPN bidirectional layers
    # convnext_unet: ConvNeXt-SE blocks per level, coarsest first
    unet_repeats: list[int] = field(default_factory=lambda: [2, 1, 1])
    dr1: DR1Config = field(default_factory=DR1Config)


@dataclass
class HeadConfig:
    """The three light heads (center heatmap, center embedding, mask features)."""

    channels: int = 256
    num_convs: int = 2
    kernel_size: int = 7  # depthwise kernel; 0 means a dense 3x3 conv per repetition
    norm: Literal["bn", "ln"] = "bn"
    activation: Literal["relu", "gelu", "hardswish", "silu"] = "relu"
    low_level_channels: int = 256  # DeepLabv3+ sum-to-merge projection of backbone L3
    prior_prob: float = 0.1  # heatmap bias init: -log((1 - p) / p)
    # per-pixel semantic head on the mask features (ReMaX's auxiliary head, region-based stuff)
    semantic_channels: int = 64
    semantic_convs: int = 2


@dataclass
class DR1MaskConfig:
    """DR1Mask (``model.meta_architecture: dr1mask``; ``docs/dr1mask.md``).

    The pyramid is ``model.decoder`` (``name: fpn``: ``channels``, ``min_level`` ..
    ``max_level``, ``norm``); ``model.num_proposals`` is K, the detections per image (and the
    instance slots in training); ``postprocess.object_threshold`` is the detections' score
    threshold, ``min_area`` the segments' minimum area, ``overlap_threshold`` and
    ``mask_threshold`` apply to ``merge: paste``.
    """

    # network (paper section 3.2)
    tower_convs: int = 4  # FCOS class / box towers
    tower_norm: Literal["gn", "bn"] = "gn"
    gn_groups: int = 32
    basis_width: int = 64  # D: DR1Basis width = embedding size (Table 6: 64 for panoptic)
    factors: Literal["both", "in", "out", "none"] = "both"  # DR1 factors from the top layer
    factor_param: Literal["one_plus", "two_sigmoid"] = "one_plus"
    aligned: bool = True  # aligned x2 + crop in DR1Basis (Table 5)
    top_kernel: int = 3  # top-layer kernel (lost in the paper; BlendMask's top layer is 3x3)
    prior_prob: float = 0.01
    # FCOS assignment and mask targets
    sizes_of_interest: list[float] = field(default_factory=lambda: [64, 128, 256, 512])
    center_radius: float = 1.5
    mask_size: int = 56  # RoIAlign crops of F and of the mask targets
    target_stride: int = 4  # unified CE at this stride (a divisor of the basis stride)
    # losses
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cls_weight: float = 1.0
    box_weight: float = 1.0
    centerness_weight: float = 1.0
    mask_weight: float = 1.0
    unified_weight: float = 0.5  # lost in the paper; BlendMask's semantic weight
    # inference
    pre_nms_topk: int = 1000
    score_threshold: float = 0.05  # candidates before NMS (FCOS)
    nms_iou: float = 0.6
    merge: Literal["argmax", "paste"] = "argmax"  # unified argmax, or Panoptic-FPN-style paste
    box_crop: bool = False  # argmax: an instance channel only competes inside its box


@dataclass
class ModelConfig:
    """The model. ``num_classes`` None means: one class per dataset category.

    ``meta_architecture`` is a key of ``build.META_ARCHITECTURES``: it picks the model and the
    target generator, criterion and post-processor that go with it.
    """

    meta_architecture: Literal["maskconver", "dr1mask"] = "maskconver"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    num_classes: int | None = None
    label_space: Literal["contiguous", "raw_ids"] = "contiguous"  # raw_ids: class = category id
    embedding_dim: int = 256
    mlp_hidden: int = 256  # 256 single-scale reference, 1024 multi-scale reference
    mlp_activation: Literal["relu", "gelu"] = "relu"
    # class-embedding fusion: mul (reference single-scale), add (paper / multi-scale), none (no
    # class embedding: MaskConver Table 4's ablation)
    fusion: Literal["mul", "add", "none"] = "mul"
    # center: stuff classes get centers like things; region: stuff comes from a per-pixel
    # semantic head's argmax, things from centers (MaskConver Table 7's "region-based" row)
    stuff_mode: Literal["center", "region"] = "center"
    multiscale: bool = False  # centers at levels min_level..max_level, mask features at pixel_level
    level: int = 3  # single-scale: level of centers (and of the mask features by default)
    # single-scale: level of the mask features (pixel head), finer than the centers' if set,
    # as the multi-scale reference does with stride-4 masks; None: model.level. A pyramid
    # decoder then reaches down to it; dr1basis assigns the heads' levels itself (stride 4);
    # multi-scale models read pixel_level instead
    mask_level: int | None = None
    min_level: int = 3
    max_level: int = 7
    pixel_level: int = 2  # multi-scale mask-feature level
    num_proposals: int = 50  # K: top-K peaks at inference, slots in training
    bn_momentum: float = 0.01  # PyTorch convention (Keras 0.99)
    bn_eps: float = 1e-3
    # peak scores and mask probabilities by relu6(x + 3) / 6 (the reference's hardware path)
    hard_sigmoid: bool = False
    dr1mask: DR1MaskConfig = field(default_factory=DR1MaskConfig)


@dataclass
class TargetConfig:
    """How panoptic labels become center heatmaps and mask slots."""

    thing_center: Literal["box", "mass"] = "box"  # box: reference single-scale; mass: paper
    stuff_center: Literal["island", "mass"] = "island"  # island: dilated-island procedure
    max_stuff_centers: int = 1
    stuff_dilation: int = 61  # square dilation of the island procedure (3 x 21x21 max-pools)
    min_stuff_area: int = 1024  # island pixels at input resolution
    gaussian_iou: float = 0.7
    mask_stride: int = 1  # mask targets / loss at input_size / mask_stride (1 = reference)
    # multi-scale level assignment by half box diagonal, in input pixels (inclusive bounds)
    level_low: list[float] = field(default_factory=lambda: [0, 40, 80, 160, 320])
    level_high: list[float] = field(default_factory=lambda: [64, 128, 256, 512, 1e7])
    crowd_as_ignore: bool = True  # crowd pixels are ignored by every loss


@dataclass
class LossConfig:
    """Loss weights (paper 1 / 10 / 10; reference MobileNet configs 1 / 5 / 5) and ReMaX.

    ReMaX (training only, ``losses/remax.py``): ``semantic_weight > 0`` adds the auxiliary
    semantic head on the mask features (0.5 in ReMaX); ``remask`` relaxes the mask logits in the
    loss by ``1 + S``; ``reclass_eta > 0`` softens the heatmap targets of overlapped classes.
    """

    center_weight: float = 1.0
    bce_weight: float = 5.0
    dice_weight: float = 5.0
    focal_alpha: float = 2.0
    focal_beta: float = 4.0
    dice_mode: Literal["adaptive", "plain"] = "adaptive"  # 1 - d exp(1 - d) vs 1 - d
    semantic_weight: float = 0.0  # 0: no semantic head is built
    remask: Literal["off", "literal", "literal+maskid"] = "off"
    remask_detach: bool = True  # stop-gradient through S (ReMaX Table 7)
    remask_source: Literal["learned", "ground_truth"] = "learned"  # Table 7's GT control
    remask_identity: bool = True  # m * (1 + S); False: m * S (Table 5)
    maskid: bool = False  # softmax mask-ID CE over the K slots without relaxation
    maskid_weight: float = 0.3
    reclass_eta: float = 0.0  # 0 = off; ReMaX's default 0.1
    reclass_splat: bool = False  # splat the soft targets with each slot's Gaussian


@dataclass
class PostprocessConfig:
    """Panoptic merge thresholds (reference MobileNet: 0.01 / 0.7 / 256)."""

    merge: Literal["reference", "maskformer"] = "reference"
    object_threshold: float = 0.01
    overlap_threshold: float = 0.7
    min_area: int = 256  # pixels on the output canvas
    mask_threshold: float = 0.5
    # merge canvas cap (pixels, 0 = none): larger images merge scaled down, then enlarged
    max_canvas_pixels: int = 1 << 24


@dataclass
class DataConfig:
    """Where samples come from. ``root`` None means the embedded synthetic dataset."""

    root: str | None = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    num_workers: int = 0
    skip_bad_samples: bool = False  # report and skip unreadable samples instead of stopping
    synthetic_train: int = 2000
    synthetic_val: int = 100
    synthetic_seed: int = 0
    synthetic_min_size: int = 96
    synthetic_max_size: int = 160


@dataclass
class AugmentConfig:
    """Training augmentation: flip, large scale jitter, optional panoptic copy-paste."""

    input_size: list[int] = field(default_factory=lambda: [256, 256])  # H, W
    hflip: bool = True
    scale_min: float = 0.1
    scale_max: float = 1.9
    copy_paste: bool = False
    copy_paste_prob: float = 0.5
    copy_paste_scale_min: float = 0.025
    copy_paste_scale_max: float = 1.5


@dataclass
class TrainConfig:
    """The training loop (one function in ``engine/train.py``)."""

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.04
    momentum: float = 0.9
    weight_decay: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    batch_size: int = 8
    max_steps: int = 1000
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    schedule: Literal["cosine", "step"] = "cosine"  # step: x lr_step_factor at each lr_steps
    lr_steps: list[float] = field(default_factory=lambda: [0.85, 0.95])  # fractions of max_steps
    lr_step_factor: float = 0.1
    grad_clip: float = 0.0  # 0 disables clipping
    backbone_lr_mult: float = 1.0  # LR scale of the backbone's parameters (ReMaX: 0.1)
    grad_accum: int = 1
    ema: bool = True
    ema_decay: float = 0.9998
    ema_warmup: bool = True
    # batch-norm momentum max(model.bn_momentum, 1 / (step + 1)) (engine/step.py): short runs
    # get usable running statistics; schedules past 1 / bn_momentum steps are unchanged
    bn_momentum_warmup: bool = True
    # batches whose statistics replace the BN running statistics before each evaluation and
    # checkpoint (engine/precise_bn.py); None: 16 for runs shorter than 20 / bn_momentum
    # steps, else off (the reference presets); 0: off
    precise_bn_batches: int | None = None
    amp: Literal["none", "bf16"] = "none"
    channels_last: bool = False
    seed: int = 0
    log_every: int = 20
    eval_every: int = 0  # 0 means only at the end
    ckpt_every: int = 500
    keep_last: int = 2
    max_eval_images: int = 0  # 0 means the whole validation split


@dataclass
class EvalConfig:
    """Inference input size and evaluation batch."""

    input_size: int = 256  # longest side after resize; padded to a square of this size
    # 0: pad to the square input_size x input_size; d > 0: pad each side to a multiple of d
    pad_divisibility: int = 0
    batch_size: int = 8
    # pq is always computed; miou (semantic IoU of the panoptic output) and mask_ap (COCOeval
    # segm AP of thing segments) are extra; the names of evaluation.metrics.METRIC_NAMES
    metrics: list[Literal["pq", "miou", "mask_ap"]] = field(
        default_factory=lambda: ["pq", "miou", "mask_ap"]
    )


@dataclass
class Config:
    """Everything a run needs; stored in every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        validate(self)


class ConfigError(MaskconverError, ValueError):
    """A config file or override is malformed, unknown or of the wrong type."""


# Config keys that moved, by the checkpoint format that moved them. Checkpoints written by an
# older format are migrated on load (``migrate_config_tree``); a config file that still uses an
# old key gets an error naming the new one.
MOVED_KEYS: dict[int, dict[str, str]] = {
    2: {"postprocess.hard_sigmoid": "model.hard_sigmoid"},  # it now also scores the peaks
}


def _pop_path(tree: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, dict) and parts[-1] in node:
        return True, node.pop(parts[-1])
    return False, None


def migrate_config_tree(tree: dict[str, Any], from_format: int) -> dict[str, Any]:
    """A copy of a config tree written at checkpoint format ``from_format``, in today's layout."""
    out = copy.deepcopy(tree)
    for version in sorted(MOVED_KEYS):
        if version <= from_format:
            continue
        for old, new in MOVED_KEYS[version].items():
            found, value = _pop_path(out, old)
            if found:
                _set_path(out, new, value)
    return out


def _moved_to(path: str) -> str | None:
    for moves in MOVED_KEYS.values():
        if path in moves:
            return moves[path]
    return None


def validate(cfg: Config) -> None:
    """Cross-field checks; raises ``ConfigError`` with the offending keys."""
    m = cfg.model
    if m.multiscale and not (m.pixel_level <= m.min_level <= m.max_level):
        raise ConfigError("model: need pixel_level <= min_level <= max_level for multiscale")
    if not m.multiscale and m.mask_level is not None and m.mask_level > m.level:
        raise ConfigError(
            "model.mask_level: the mask features cannot be coarser than the centers: need "
            f"mask_level <= level (got mask_level {m.mask_level}, level {m.level})"
        )
    if m.num_proposals < 1:
        raise ConfigError("model.num_proposals must be >= 1")
    if len(cfg.augment.input_size) != 2:
        raise ConfigError("augment.input_size must be [H, W]")
    if cfg.augment.scale_min <= 0 or cfg.augment.scale_min > cfg.augment.scale_max:
        raise ConfigError("augment: need 0 < scale_min <= scale_max")
    if m.multiscale:
        n_levels = m.max_level - m.min_level + 1
        if len(cfg.targets.level_low) != n_levels or len(cfg.targets.level_high) != n_levels:
            raise ConfigError(
                f"targets.level_low/level_high need {n_levels} entries "
                f"(levels {m.min_level}..{m.max_level})"
            )
    if cfg.targets.mask_stride < 1:
        raise ConfigError("targets.mask_stride must be >= 1")
    if cfg.train.grad_accum < 1 or cfg.train.batch_size < 1:
        raise ConfigError("train.batch_size and train.grad_accum must be >= 1")
    loss = cfg.loss
    if loss.semantic_weight < 0:
        raise ConfigError("loss.semantic_weight must be >= 0")
    if m.stuff_mode == "region" and loss.semantic_weight <= 0:
        raise ConfigError(
            "model.stuff_mode=region predicts stuff with a semantic head: set loss.semantic_weight"
            " > 0 (e.g. 1.0)"
        )
    has_semantic = loss.semantic_weight > 0
    if loss.remask != "off" and loss.remask_source == "learned" and not has_semantic:
        raise ConfigError(
            f"loss.remask={loss.remask} relaxes with a learned semantic map: set "
            "loss.semantic_weight > 0 (ReMaX uses 0.5) or loss.remask_source=ground_truth"
        )
    if not 0.0 <= loss.reclass_eta < 1.0:
        raise ConfigError(f"loss.reclass_eta must be in [0, 1), got {loss.reclass_eta}")
    for key, value, ok, expected in _ranges(cfg):
        if not ok(value):
            raise ConfigError(f"{key} must be {expected}, got {value!r}")
    if m.meta_architecture == "dr1mask":
        _validate_dr1mask(cfg)


def _validate_dr1mask(cfg: Config) -> None:
    """DR1Mask's cross-field checks (its pyramid is the FPN of ``model.decoder``)."""
    m, r = cfg.model, cfg.model.dr1mask
    if m.decoder.name != "fpn":
        raise ConfigError(
            f"model.meta_architecture=dr1mask builds its pyramid as an FPN: set "
            f"model.decoder.name=fpn (got {m.decoder.name!r})"
        )
    levels = m.decoder.max_level - m.decoder.min_level + 1
    if len(r.sizes_of_interest) != levels - 1:
        raise ConfigError(
            f"model.dr1mask.sizes_of_interest needs {levels - 1} boundaries for the levels "
            f"{m.decoder.min_level}..{m.decoder.max_level}, got {r.sizes_of_interest}"
        )
    if any(b <= a for a, b in zip(r.sizes_of_interest, r.sizes_of_interest[1:])):
        raise ConfigError(f"model.dr1mask.sizes_of_interest must ascend: {r.sizes_of_interest}")
    basis_stride = 2 ** (m.decoder.min_level - 1)
    if r.target_stride < 1 or basis_stride % r.target_stride:
        raise ConfigError(
            f"model.dr1mask.target_stride must divide the basis stride {basis_stride}, "
            f"got {r.target_stride}"
        )
    if r.tower_norm == "gn" and (r.gn_groups < 1 or m.decoder.channels % r.gn_groups):
        raise ConfigError(
            f"model.dr1mask.gn_groups={r.gn_groups} must divide model.decoder.channels="
            f"{m.decoder.channels}"
        )
    if r.pre_nms_topk < m.num_proposals:
        raise ConfigError(
            f"model.dr1mask.pre_nms_topk={r.pre_nms_topk} must be >= model.num_proposals="
            f"{m.num_proposals} (the detections are chosen among the candidates)"
        )
    for name in ("tower_convs", "basis_width", "top_kernel", "mask_size"):
        if getattr(r, name) < 1:
            raise ConfigError(f"model.dr1mask.{name} must be >= 1, got {getattr(r, name)}")
    if r.top_kernel % 2 == 0:
        raise ConfigError(f"model.dr1mask.top_kernel must be odd, got {r.top_kernel}")
    checks = {
        "prior_prob": 0 < r.prior_prob < 1,
        "center_radius": math.isfinite(r.center_radius) and r.center_radius >= 0,
        "nms_iou": 0 <= r.nms_iou <= 1,
        "score_threshold": math.isfinite(r.score_threshold),
        "focal_alpha": 0 <= r.focal_alpha <= 1,
        "focal_gamma": math.isfinite(r.focal_gamma) and r.focal_gamma >= 0,
    }
    weights = ("cls", "box", "centerness", "mask", "unified")
    checks.update(
        {
            f"{w}_weight": math.isfinite(getattr(r, f"{w}_weight"))
            and getattr(r, f"{w}_weight") >= 0
            for w in weights
        }
    )
    for name, ok in checks.items():
        if not ok:
            raise ConfigError(f"model.dr1mask.{name} is out of range: {getattr(r, name)!r}")


# K beyond this makes the per-slot tensors of one batch grow past any machine's memory
# (measured: num_proposals=100000 grew to 23.6 GB); the reference uses 50-256
MAX_PROPOSALS = 1000


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _ranges(cfg: Config) -> list[tuple[str, Any, Any, str]]:
    """(key, value, predicate, expectation) of every bounded field, checked up front."""
    m, t, tr, ev, d, a, loss, post = (
        cfg.model,
        cfg.targets,
        cfg.train,
        cfg.eval,
        cfg.data,
        cfg.augment,
        cfg.loss,
        cfg.postprocess,
    )
    positive_int = (lambda v: v >= 1, ">= 1")
    non_negative = (lambda v: _finite(v) and v >= 0, "a finite number >= 0")
    unit = (lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]")
    rows: list[tuple[str, Any, tuple[Any, str]]] = [
        (
            "model.num_proposals",
            m.num_proposals,
            (lambda v: 1 <= v <= MAX_PROPOSALS, f"in [1, {MAX_PROPOSALS}]"),
        ),
        ("model.embedding_dim", m.embedding_dim, positive_int),
        ("model.mlp_hidden", m.mlp_hidden, positive_int),
        ("model.head.channels", m.head.channels, positive_int),
        ("model.decoder.channels", m.decoder.channels, positive_int),
        ("model.bn_momentum", m.bn_momentum, (lambda v: _finite(v) and 0 < v <= 1, "in (0, 1]")),
        ("model.bn_eps", m.bn_eps, (lambda v: _finite(v) and v > 0, "> 0")),
        ("augment.input_size", a.input_size, (lambda v: min(v) >= 1, "two sizes >= 1")),
        ("eval.input_size", ev.input_size, positive_int),
        ("eval.batch_size", ev.batch_size, positive_int),
        ("eval.pad_divisibility", ev.pad_divisibility, (lambda v: v >= 0, ">= 0")),
        (
            "eval.metrics",
            ev.metrics,
            (lambda v: "pq" in v and len(set(v)) == len(v), "a list with 'pq', no repeats"),
        ),
        ("train.max_steps", tr.max_steps, positive_int),
        ("train.warmup_steps", tr.warmup_steps, (lambda v: v >= 0, ">= 0")),
        ("train.log_every", tr.log_every, positive_int),
        ("train.ckpt_every", tr.ckpt_every, positive_int),
        ("train.eval_every", tr.eval_every, (lambda v: v >= 0, ">= 0 (0: only at the end)")),
        ("train.keep_last", tr.keep_last, (lambda v: v >= 0, ">= 0 (0: keep all)")),
        ("train.max_eval_images", tr.max_eval_images, (lambda v: v >= 0, ">= 0 (0: all)")),
        (
            "train.precise_bn_batches",
            tr.precise_bn_batches,
            (lambda v: v is None or v >= 0, ">= 0 or null (auto)"),
        ),
        ("train.lr", tr.lr, (lambda v: _finite(v) and v > 0, "a finite number > 0")),
        ("train.weight_decay", tr.weight_decay, non_negative),
        ("train.momentum", tr.momentum, (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)")),
        (
            "train.betas",
            tr.betas,
            (
                lambda v: len(v) == 2 and all(_finite(b) and 0 <= b < 1 for b in v),
                "two numbers in [0, 1)",
            ),
        ),
        ("train.ema_decay", tr.ema_decay, unit),
        ("train.grad_clip", tr.grad_clip, non_negative),
        (
            "train.backbone_lr_mult",
            tr.backbone_lr_mult,
            (lambda v: _finite(v) and v > 0, "a finite number > 0"),
        ),
        ("train.min_lr_ratio", tr.min_lr_ratio, unit),
        (
            "train.lr_steps",
            tr.lr_steps,
            (lambda v: all(unit[0](f) for f in v), "fractions in [0, 1]"),
        ),
        ("train.lr_step_factor", tr.lr_step_factor, (lambda v: _finite(v) and v > 0, "> 0")),
        ("data.num_workers", d.num_workers, (lambda v: v >= 0, ">= 0")),
        ("data.synthetic_train", d.synthetic_train, positive_int),
        ("data.synthetic_val", d.synthetic_val, positive_int),
        (
            "data.synthetic_min_size",
            d.synthetic_min_size,
            (lambda v: 1 <= v <= d.synthetic_max_size, "in [1, data.synthetic_max_size]"),
        ),
        ("targets.gaussian_iou", t.gaussian_iou, (lambda v: _finite(v) and 0 < v < 1, "in (0, 1)")),
        ("targets.max_stuff_centers", t.max_stuff_centers, positive_int),
        ("targets.stuff_dilation", t.stuff_dilation, positive_int),
        ("targets.min_stuff_area", t.min_stuff_area, (lambda v: v >= 0, ">= 0")),
        ("postprocess.object_threshold", post.object_threshold, (_finite, "finite")),
        ("postprocess.overlap_threshold", post.overlap_threshold, (_finite, "finite")),
        ("postprocess.mask_threshold", post.mask_threshold, (_finite, "finite")),
        ("postprocess.min_area", post.min_area, (lambda v: v >= 0, ">= 0")),
        *(
            (f"loss.{name}", getattr(loss, name), non_negative)
            for name in ("center_weight", "bce_weight", "dice_weight", "maskid_weight")
        ),
    ]
    return [(key, value, check, expected) for key, value, (check, expected) in rows]


# ---------------------------------------------------------------------------------------------
# Loading, merging, overriding and dumping


def list_presets() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (YAML/JSON serialisable)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """YAML text of the resolved config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _hint(key: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """Validate ``value`` against a type hint; returns the (possibly coerced) value."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_value(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string: accept it
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from defaults updated with ``data`` (recursively, strictly)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            moved = _moved_to(path)
            if moved is not None:
                raise ConfigError(f"config key '{path}' moved to '{moved}'")
            prefix = f"{where}." if where else ""
            hint = _hint(str(key), names).replace("'", f"'{prefix}", 1)
            raise ConfigError(f"unknown config key '{path}'{hint}")
        field_type = hints[key]
        if dataclasses.is_dataclass(field_type):
            kwargs[key] = _from_dict(field_type, value if value is not None else {}, path)  # type: ignore[arg-type]
        else:
            kwargs[key] = _check_value(value, field_type, path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - defensive
        raise ConfigError(f"{where}: {e}") from e


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.lr=0.1'`` -> ``('train.lr', 0.1)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': cannot parse value: {e}") from e
    return key, value


def resolve_preset(preset_or_path: str) -> Path:
    """Path of a preset name (``tiny``) or of a YAML file."""
    candidate = Path(preset_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"config file not found: {candidate}")
        return candidate
    path = PRESET_DIR / f"{preset_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset '{preset_or_path}'{_hint(preset_or_path, list_presets())}; "
            f"presets: {', '.join(list_presets())}"
        )
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with a clear error naming the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def config_from_dict(data: dict[str, Any]) -> Config:
    """Strictly build a ``Config`` from a (partial) nested dict."""
    return typing.cast(Config, _from_dict(Config, data, ""))


def load_config(preset_or_path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- one YAML preset or file <- ``a.b=c`` overrides, strictly checked."""
    tree: dict[str, Any] = {}
    if preset_or_path:
        tree = read_yaml(resolve_preset(preset_or_path))
    for text in overrides or []:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    return config_from_dict(tree)


def merge_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A new config: ``cfg`` with ``a.b=c`` overrides applied."""
    tree = to_dict(cfg)
    for text in overrides:
        key, value = parse_override(text)
        patch: dict[str, Any] = {}
        _set_path(patch, key, value)
        tree = _deep_merge(tree, patch)
    return config_from_dict(tree)
