"""The run sections: data, augmentation, the training loop, evaluation, post-processing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from maskconver.config.checks import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_FLOAT,
    UNIT,
    ConfigError,
    check,
    checks,
    finite,
)

# the loop's batch arithmetic needs both; one message names the pair (as it always has)
BATCH = check(
    lambda v: v >= 1, ">= 1", message="train.batch_size and train.grad_accum must be >= 1"
)


@dataclass
class PostprocessConfig:
    """Settings every post-processor shares (the merges are per meta-architecture)."""

    # merge canvas cap (pixels, 0 = none): larger images merge scaled down, then enlarged
    max_canvas_pixels: int = 1 << 24


@dataclass
class DataConfig:
    """Where samples come from. ``root`` None means the embedded synthetic dataset."""

    # COCO panoptic dataset root; null: the embedded synthetic shapes dataset
    root: str | None = None
    train_split: str = "train2017"  # training split (annotations/panoptic_<split>.json)
    val_split: str = "val2017"  # validation split
    # data-loader worker processes (0: load in the main process)
    num_workers: int = field(default=0, metadata=NON_NEGATIVE_INT)
    skip_bad_samples: bool = False  # report and skip unreadable samples instead of stopping
    # synthetic dataset: training scenes
    synthetic_train: int = field(default=2000, metadata=POSITIVE)
    # synthetic dataset: validation scenes
    synthetic_val: int = field(default=100, metadata=POSITIVE)
    synthetic_seed: int = 0  # synthetic dataset: seed of the scenes
    synthetic_min_size: int = 96  # in [1, synthetic_max_size] (``check``)
    synthetic_max_size: int = 160  # synthetic dataset: largest image side

    def check(self) -> None:
        """The synthetic size range (``ConfigError``)."""
        value = self.synthetic_min_size
        if not 1 <= value <= self.synthetic_max_size:
            raise ConfigError(
                f"data.synthetic_min_size must be in [1, data.synthetic_max_size], got {value!r}"
            )


@dataclass
class AugmentConfig:
    """Training augmentation: flip, large scale jitter, optional panoptic copy-paste."""

    input_size: list[int] = field(  # H, W
        default_factory=lambda: [256, 256],
        metadata=checks(
            check(lambda v: len(v) == 2, "[H, W]", message="{key} must be [H, W]"),
            check(lambda v: min(v) >= 1, "two sizes >= 1"),
        ),
    )
    hflip: bool = True  # random horizontal flip
    scale_min: float = 0.1  # large scale jitter: smallest scale (0 < scale_min <= scale_max)
    scale_max: float = 1.9  # large scale jitter: largest scale
    copy_paste: bool = False  # panoptic copy-paste between the images of a batch
    copy_paste_prob: float = 0.5  # copy-paste: probability per image
    copy_paste_scale_min: float = 0.025  # copy-paste: smallest jitter scale of the pasted image
    copy_paste_scale_max: float = 1.5  # copy-paste: largest jitter scale of the pasted image

    def check(self) -> None:
        """The jitter range (``ConfigError``)."""
        if self.scale_min <= 0 or self.scale_min > self.scale_max:
            raise ConfigError("augment: need 0 < scale_min <= scale_max")


@dataclass
class TrainConfig:
    """The training loop (one function in ``engine/train.py``)."""

    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd (with momentum) or adamw
    # base learning rate (peak after warm-up)
    lr: float = field(default=0.04, metadata=POSITIVE_FLOAT)
    # SGD momentum
    momentum: float = field(
        default=0.9, metadata=check(lambda v: finite(v) and 0 <= v < 1, "in [0, 1)")
    )
    weight_decay: float = field(default=1e-5, metadata=NON_NEGATIVE)  # weight decay
    # AdamW betas
    betas: list[float] = field(
        default_factory=lambda: [0.9, 0.999],
        metadata=check(
            lambda v: len(v) == 2 and all(finite(b) and 0 <= b < 1 for b in v),
            "two numbers in [0, 1)",
        ),
    )
    # global batch per optimizer step (split over processes and grad_accum)
    batch_size: int = field(default=8, metadata=BATCH)
    max_steps: int = field(default=1000, metadata=POSITIVE)  # optimizer steps of the run
    # linear learning-rate warm-up steps
    warmup_steps: int = field(default=100, metadata=NON_NEGATIVE_INT)
    # cosine schedule: final learning rate as a fraction of lr
    min_lr_ratio: float = field(default=0.0, metadata=UNIT)
    schedule: Literal["cosine", "step"] = "cosine"  # step: x lr_step_factor at each lr_steps
    lr_steps: list[float] = field(  # fractions of max_steps
        default_factory=lambda: [0.85, 0.95],
        metadata=check(lambda v: all(finite(f) and 0 <= f <= 1 for f in v), "fractions in [0, 1]"),
    )
    # step schedule: learning-rate factor at each of lr_steps
    lr_step_factor: float = field(default=0.1, metadata=check(lambda v: finite(v) and v > 0, "> 0"))
    grad_clip: float = field(default=0.0, metadata=NON_NEGATIVE)  # 0 disables clipping
    # LR scale of the backbone's parameters (ReMaX: 0.1)
    backbone_lr_mult: float = field(default=1.0, metadata=POSITIVE_FLOAT)
    grad_accum: int = field(default=1, metadata=BATCH)  # micro-batches per optimizer step
    ema: bool = True  # keep an exponential moving average of the weights (evaluated and exported)
    ema_decay: float = field(default=0.9998, metadata=UNIT)  # EMA decay
    ema_warmup: bool = True  # EMA decay warm-up: min(ema_decay, (1 + step) / (10 + step))
    # batch-norm momentum max(model.bn_momentum, 1 / (step + 1)) (engine/step.py): short runs
    # get usable running statistics; schedules past 1 / bn_momentum steps are unchanged
    bn_momentum_warmup: bool = True
    # batches whose statistics replace the BN running statistics before each evaluation and
    # checkpoint (engine/precise_bn.py); None: 16 for runs shorter than 20 / bn_momentum
    # steps, else off (the reference presets); 0: off
    precise_bn_batches: int | None = field(
        default=None, metadata=check(lambda v: v is None or v >= 0, ">= 0 or null (auto)")
    )
    amp: Literal["none", "bf16"] = "none"  # mixed precision: none, or bfloat16 autocast
    channels_last: bool = False  # train in channels_last memory format
    seed: int = 0  # seed of the model initialisation and the data order
    # steps between metric lines in metrics.jsonl
    log_every: int = field(default=20, metadata=POSITIVE)
    eval_every: int = field(  # 0 means only at the end
        default=0, metadata=check(lambda v: v >= 0, ">= 0 (0: only at the end)")
    )
    ckpt_every: int = field(default=500, metadata=POSITIVE)  # steps between checkpoints
    # newest checkpoints kept besides best/ (0: keep all)
    keep_last: int = field(default=2, metadata=check(lambda v: v >= 0, ">= 0 (0: keep all)"))
    max_eval_images: int = field(  # 0 means the whole validation split
        default=0, metadata=check(lambda v: v >= 0, ">= 0 (0: all)")
    )


@dataclass
class EvalConfig:
    """Inference input size and evaluation batch."""

    # longest side after resize; padded to a square of this size
    input_size: int = field(default=256, metadata=POSITIVE)
    # 0: pad to the square input_size x input_size; d > 0: pad each side to a multiple of d
    pad_divisibility: int = field(default=0, metadata=NON_NEGATIVE_INT)
    batch_size: int = field(default=8, metadata=POSITIVE)  # images per evaluation batch
    # pq is always computed; miou (semantic IoU of the panoptic output) and mask_ap (COCOeval
    # segm AP of thing segments) are extra; the names of evaluation.metrics.METRIC_NAMES
    metrics: list[Literal["pq", "miou", "mask_ap"]] = field(
        default_factory=lambda: ["pq", "miou", "mask_ap"],
        metadata=check(
            lambda v: "pq" in v and len(set(v)) == len(v), "a list with 'pq', no repeats"
        ),
    )
