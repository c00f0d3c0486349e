"""A training run's data: its datasets and this process's stream of micro-batches.

Used by ``engine/train.py::train``, which builds the model, criterion and optimizer itself.
Batch semantics: ``train.batch_size`` is the GLOBAL number of images per optimizer step; each of
``world_size`` processes runs ``grad_accum`` micro-batches of
``batch_size / (world_size * grad_accum)`` images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from maskconver.build import (
    build_copy_paste,
    build_target_generator,
    build_train_transforms,
    resolve_num_classes,
)
from maskconver.config import Config, ConfigError, TrainConfig
from maskconver.data.types import CategorySet
from maskconver.engine.data import build_dataset, check_same_categories, check_split
from maskconver.engine.distributed import DistInfo
from maskconver.engine.loader import StepSampler, TrainSampleDataset, build_train_loader


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The datasets of a run.

    Attributes:
        train_set: augmented training samples with their targets, keyed by the step sampler.
        val_set: the validation split (``engine.evaluate.run_evaluation``).
        categories: the training split's categories (the validation split has the same ones).
        num_classes: the model's number of classes (``build.resolve_num_classes``).
    """

    train_set: TrainSampleDataset
    val_set: Any
    categories: CategorySet
    num_classes: int


def build_training_data(cfg: Config, *, log: Callable[[str], None]) -> TrainingData:
    """Both splits, checked before step 1; the categories come from the training split.

    Args:
        cfg: the run config (``data``, ``augment``, targets through the meta-architecture).
        log: receives the lines about skipped bad samples (``data.skip_bad_samples``).

    Raises:
        ConfigError: the splits disagree on their categories, or the class count does not fit.
        DatasetError: a split has a bad file and ``data.skip_bad_samples`` is off.
    """
    train_base = build_dataset(cfg, "train")
    val_base = build_dataset(cfg, "val")
    categories = train_base.categories
    check_same_categories(categories, val_base.categories)
    num_classes = resolve_num_classes(cfg, categories)
    for split, dataset in (("train", train_base), ("val", val_base)):
        check_split(dataset, split, skip_bad=cfg.data.skip_bad_samples, log=log)
    train_set = TrainSampleDataset(
        train_base,
        transforms=build_train_transforms(cfg),
        target_generator=build_target_generator(cfg, categories, num_classes),
        copy_paste=build_copy_paste(cfg, categories),
        seed=cfg.train.seed,
        skip_bad=cfg.data.skip_bad_samples,
    )
    return TrainingData(train_set, val_base, categories, num_classes)


def check_micro_batch(tc: TrainConfig, model: nn.Module, world_size: int) -> None:
    """Refuse a micro-batch smaller than the model's ``min_train_batch`` (default 1).

    Raises:
        ConfigError: names the batch size, process count and ``grad_accum`` behind it.
    """
    micro_batch = tc.batch_size // (world_size * tc.grad_accum)
    needed = int(getattr(model, "min_train_batch", 1))  # e.g. ASPP image-pooling BN: 2
    if micro_batch < needed:
        raise ConfigError(
            f"train.batch_size={tc.batch_size} over {world_size} process(es) x "
            f"grad_accum={tc.grad_accum} leaves {micro_batch} image(s) per forward; this "
            f"model needs at least {needed} (batch statistics of its decoder)"
        )


def training_batches(
    train_set: TrainSampleDataset,
    cfg: Config,
    info: DistInfo,
    *,
    start_step: int,
    end_step: int,
) -> Iterator[Any]:
    """This process's micro-batches for optimizer steps ``start_step .. end_step - 1``.

    Each step takes ``train.grad_accum`` items ``(images [B, 3, H, W], targets, skipped)``, where
    ``skipped`` counts the bad samples replaced in that micro-batch. Creating the iterator never
    draws from the global torch RNG (the loader has its own seeded generator).
    """
    tc = cfg.train
    sampler = StepSampler(
        len(train_set),
        tc.batch_size,
        seed=tc.seed,
        start_step=start_step,
        rank=info.rank,
        world_size=info.world_size,
        micro_batches=tc.grad_accum,
        num_steps=end_step,
    )
    loader = build_train_loader(
        train_set,
        sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=info.device.type == "cuda",
        seed=tc.seed,
    )
    return iter(loader)
