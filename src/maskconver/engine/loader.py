"""Training samples, batches and a deterministic step-based sampler.

Reproducibility contract: the random numbers of a training sample depend only on
``(seed, epoch, index)`` (``np.random.default_rng([seed, epoch, index])``), and which samples make
up step ``s`` depends only on ``(seed, s, batch_size, dataset length)``. So a run resumed at step
``s`` sees exactly the batches an uninterrupted run would, whatever the number of workers.

``StepSampler`` yields lists of ``(epoch, index)`` keys rather than bare indices so that the
dataset (possibly in a worker process) knows the epoch of each sample.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from PIL import UnidentifiedImageError

from maskconver.data.types import PanopticSample

logger = logging.getLogger(__name__)

# How many replacement samples a skip_bad dataset tries before giving up on a step.
MAX_REPLACEMENTS = 100

SampleKey = tuple[int, int]  # (epoch, index)


class PanopticSource(Protocol):
    """A dataset of ``PanopticSample`` (``SyntheticPanoptic``, ``CocoPanopticDataset``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> PanopticSample: ...


Transform = Callable[[PanopticSample, np.random.Generator], PanopticSample]
CopyPaste = Callable[[PanopticSample, PanopticSample, np.random.Generator], PanopticSample]


def _bad_sample_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this sample is unreadable" (skippable with ``skip_bad``)."""
    from maskconver.data.coco_panoptic import DatasetError

    return (DatasetError, OSError, UnidentifiedImageError)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 RGB -> ``[3, H, W]`` float32 in 0..255."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()


class TrainSampleDataset:
    """Augmented image + targets for a ``(epoch, index)`` key (or a bare index = epoch 0).

    Args:
        base: the panoptic dataset.
        transforms: ``transforms(sample, rng) -> sample`` producing a fixed-size training crop.
        target_generator: ``target_generator(sample) -> targets`` (a meta-architecture's
            per-image targets, whose class names its ``batch_type``).
        copy_paste: optional ``copy_paste(sample, other, rng)``; the partner is another index
            drawn from the sample's rng. It is passed raw when the copy-paste has its own
            ``jitter`` (the reference's second scale range), else after ``transforms``.
        seed: base seed of every per-sample rng.
        skip_bad: on an unreadable sample (``DatasetError``, image read error) log it once,
            count it in ``num_skipped`` and use another index drawn from the rng; otherwise the
            error propagates. (With DataLoader workers the count lives in each worker process.)
    """

    def __init__(
        self,
        base: PanopticSource,
        *,
        transforms: Transform,
        target_generator: Callable[[PanopticSample], Any],
        copy_paste: CopyPaste | None = None,
        seed: int,
        skip_bad: bool = False,
    ) -> None:
        if len(base) == 0:
            raise ValueError("the training dataset is empty")
        self.base = base
        self.transforms = transforms
        self.target_generator = target_generator
        self.copy_paste = copy_paste
        self.seed = seed
        self.skip_bad = skip_bad
        self.num_skipped = 0
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.base)

    def _load(self, index: int, rng: np.random.Generator, skipped: list[int]) -> PanopticSample:
        """``base[index]``, or with ``skip_bad`` the first readable replacement drawn from rng.

        Every skip is counted in ``skipped[0]`` (travels with the sample, so skips in loader
        workers reach the training loop) and in ``num_skipped`` (this process only).
        """
        errors = _bad_sample_errors()
        for _ in range(MAX_REPLACEMENTS + 1):
            try:
                return self.base[index]
            except errors as e:
                if not self.skip_bad:
                    raise
                self.num_skipped += 1
                skipped[0] += 1
                if index not in self._reported:
                    self._reported.add(index)
                    logger.warning("skipping bad training sample %d: %s", index, e)
                index = int(rng.integers(len(self.base)))
        raise RuntimeError(f"gave up after {MAX_REPLACEMENTS} unreadable samples in a row")

    def __getitem__(self, key: SampleKey | int) -> TrainItem:
        """Image ``[3, H, W]`` float32 0..255, its ``Targets``, and the samples skipped for it."""
        epoch, index = (0, key) if isinstance(key, int) else key
        rng = np.random.default_rng([self.seed, epoch, index])
        skipped = [0]
        sample = self.transforms(self._load(index, rng, skipped), rng)
        if self.copy_paste is not None:
            other_index = int(rng.integers(len(self.base)))
            other = self._load(other_index, rng, skipped)
            if getattr(self.copy_paste, "jitter", None) is None:
                # a copy-paste without its own scale jitter expects a same-size partner
                other = self.transforms(other, rng)
            sample = self.copy_paste(sample, other, rng)
        return TrainItem(image_to_tensor(sample.image), self.target_generator(sample), skipped[0])


class TrainItem(NamedTuple):
    """One training sample: ``image [3, H, W]`` float32, its targets, samples skipped for it."""

    image: torch.Tensor
    targets: Any  # a meta-architecture's per-image targets
    skipped: int = 0


class TrainBatch(NamedTuple):
    """A micro-batch: ``images [B, 3, H, W]``, stacked targets, unreadable samples skipped."""

    images: torch.Tensor
    targets: Any  # the targets' ``batch_type`` (a ``batching.StackedFields``)
    skipped: int = 0


def collate_train(batch: Sequence[TrainItem | tuple[torch.Tensor, Any]]) -> TrainBatch:
    """Stack samples into images ``[B, 3, H, W]`` and stacked targets; sum the skips.

    Targets are stacked by their class's ``batch_type`` (every meta-architecture's per-image
    targets name one).
    """
    items = [item if isinstance(item, TrainItem) else TrainItem(*item) for item in batch]
    shapes = {tuple(item.image.shape) for item in items}
    if len(shapes) != 1:
        raise ValueError(f"training images in a batch must share a size, got {sorted(shapes)}")
    images = torch.stack([item.image for item in items])
    batch_type = getattr(type(items[0].targets), "batch_type", None)
    if batch_type is None:
        raise TypeError(
            f"{type(items[0].targets).__name__} names no batch_type: a meta-architecture's "
            "per-image targets say how they stack (see maskconver.batching)"
        )
    targets = batch_type.stack([item.targets for item in items])
    return TrainBatch(images, targets, sum(item.skipped for item in items))


class StepSampler:
    """Batches of ``(epoch, index)`` keys for optimizer steps ``start_step, start_step + 1, ...``.

    The sample stream is the concatenation of per-epoch permutations
    ``default_rng([seed, epoch]).permutation(dataset_len)``. Step ``s`` owns stream positions
    ``[s * batch_size, (s + 1) * batch_size)`` (the global batch); rank ``r`` of ``world_size``
    takes the ``r``-th equal slice, split further into ``micro_batches`` consecutive chunks that
    are yielded one by one (gradient accumulation).

    Args:
        dataset_len: number of samples.
        batch_size: global batch per optimizer step (divisible by ``world_size * micro_batches``).
        seed: permutation seed.
        start_step: first step to yield (resume).
        rank, world_size: this process's share.
        micro_batches: yields per step and rank.
        num_steps: stop after step ``num_steps - 1``; None never stops.
    """

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        *,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        micro_batches: int = 1,
        num_steps: int | None = None,
    ) -> None:
        if dataset_len < 1:
            raise ValueError("StepSampler: the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"StepSampler: rank {rank} outside world_size {world_size}")
        if batch_size % (world_size * micro_batches) != 0:
            raise ValueError(
                f"batch size {batch_size} must be divisible by world_size ({world_size}) x "
                f"gradient accumulation ({micro_batches})"
            )
        self.dataset_len = dataset_len
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self.micro_batches = micro_batches
        self.num_steps = num_steps
        self.micro_batch_size = batch_size // (world_size * micro_batches)
        self._epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _key(self, position: int) -> SampleKey:
        epoch, offset = divmod(position, self.dataset_len)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.dataset_len)
        return epoch, int(self._perm[offset])

    def step_keys(self, step: int) -> list[list[SampleKey]]:
        """The micro-batches of this rank for optimizer step ``step``."""
        first = step * self.batch_size + self.rank * self.micro_batch_size * self.micro_batches
        return [
            [self._key(first + m * self.micro_batch_size + i) for i in range(self.micro_batch_size)]
            for m in range(self.micro_batches)
        ]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        step = self.start_step
        while self.num_steps is None or step < self.num_steps:
            yield from self.step_keys(step)
            step += 1

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("an endless StepSampler has no length")
        return max(self.num_steps - self.start_step, 0) * self.micro_batches


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy/random seeds from torch's per-worker seed.

    Training randomness does not depend on it (samples use their own keyed rng); this only keeps
    third-party code that uses the global generators from repeating across workers.
    """
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_train_loader(
    dataset: TrainSampleDataset,
    sampler: StepSampler,
    *,
    num_workers: int,
    pin_memory: bool = False,
    seed: int = 0,
) -> torch.utils.data.DataLoader[Any]:
    """A ``DataLoader`` over ``sampler``'s micro-batches with ``collate_train``.

    The loader has its own seeded generator, so creating its iterator never draws from the
    global torch RNG (that would shift model-side randomness between fresh and resumed runs).
    """
    return torch.utils.data.DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_train,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )
