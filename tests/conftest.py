"""Shared fixtures: the synthetic dataset, a written synthetic COCO root, hand-made samples."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from maskconver.data.synthetic import SyntheticPanoptic, write_synthetic_dataset
from maskconver.data.types import PanopticSample, SegmentInfo

COCO_TRAIN_IMAGES = 6
COCO_VAL_IMAGES = 4


class SampleFactory:
    """Builds small hand-made ``PanopticSample``s.

    ``factory(panoptic, categories)``: ``panoptic`` is an ``[H, W]`` array (or nested lists) of
    segment ids; ``categories`` maps segment id -> category id (default: every id is category 1).
    Segments are listed in ascending id order with ``area`` counted from the map and ``isthing``
    true for categories in ``thing_categories``. Without ``image``, each pixel gets ``color(id)``.
    """

    def color(self, segment_id: int) -> tuple[int, int, int]:
        """A colour per id; ids 0..31 get well separated colours (channel steps of >= 40)."""
        k = int(segment_id) % 32
        return (40 * (k % 4) + 20, 40 * ((k // 4) % 4) + 20, 120 * (k // 16) + 60)

    def __call__(
        self,
        panoptic: np.ndarray | list[list[int]],
        categories: dict[int, int] | None = None,
        *,
        thing_categories: Iterable[int] = (1,),
        crowd: Iterable[int] = (),
        image: np.ndarray | None = None,
        image_id: int | str = 1,
    ) -> PanopticSample:
        ids_map = np.asarray(panoptic, dtype=np.int32)
        things, crowd_ids = set(thing_categories), set(crowd)
        ids, counts = np.unique(ids_map, return_counts=True)
        segments = []
        for seg_id, count in zip(ids.tolist(), counts.tolist(), strict=True):
            if seg_id <= 0:
                continue
            category = (categories or {}).get(seg_id, 1)
            segments.append(
                SegmentInfo(
                    id=seg_id,
                    category_id=category,
                    iscrowd=seg_id in crowd_ids,
                    isthing=category in things,
                    area=count,
                )
            )
        if image is None:
            lut = {i: self.color(i) for i in ids.tolist()}
            image = np.zeros((*ids_map.shape, 3), dtype=np.uint8)
            for seg_id, rgb in lut.items():
                image[ids_map == seg_id] = rgb
        return PanopticSample(
            image=image,
            panoptic=ids_map,
            segments=segments,
            image_id=image_id,
            file_name=f"{image_id}.png",
            meta={"orig_size": ids_map.shape},
        )


@pytest.fixture(scope="session")
def make_sample() -> SampleFactory:
    """Factory for small hand-made ``PanopticSample``s (see ``SampleFactory``)."""
    return SampleFactory()


@pytest.fixture(scope="session")
def synthetic_dataset() -> SyntheticPanoptic:
    """``SyntheticPanoptic(8, seed=0)``."""
    return SyntheticPanoptic(8, seed=0)


@pytest.fixture(scope="session")
def synthetic_coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset written in the COCO panoptic layout: 6 train2017, 4 val2017 images."""
    root = tmp_path_factory.mktemp("synthetic_coco")
    write_synthetic_dataset(
        root, train=COCO_TRAIN_IMAGES, val=COCO_VAL_IMAGES, seed=0, progress=False
    )
    return root


# Overrides for a 64 px tiny-preset run of a few steps whose untrained proposals still become
# segments (MaskFormer merge with every threshold at 0), shared by the end-to-end tests.
# a one-step training run of ``tiny`` on a handful of 64 px synthetic scenes (``--set`` values)
ONE_STEP_RUN = [
    "train.batch_size=2",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.max_steps=1",
    "train.max_eval_images=2",
    "augment.input_size=[64, 64]",
    "eval.input_size=64",
    "eval.batch_size=2",
    "data.synthetic_train=4",
    "data.synthetic_val=2",
]


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test (restored after it): small models run faster so on 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL_UNTRAINED_RUN = [
    "train.batch_size=2",
    "train.warmup_steps=1",
    "train.log_every=1",
    "augment.input_size=[64, 64]",
    "eval.input_size=64",
    "model.maskconver.merge.mode=maskformer",
    "model.maskconver.merge.object_threshold=0.0",
    "model.maskconver.merge.mask_threshold=0.0",
    "model.maskconver.merge.overlap_threshold=0.0",
]


def save_untrained_tiny(folder: Path, overrides: Sequence[str] = ()) -> Path:
    """An untrained ``tiny`` checkpoint (``SMALL_UNTRAINED_RUN``: 64 px, opened-up merge; then
    ``overrides``)."""
    from maskconver.build import build_model
    from maskconver.config import load_config
    from maskconver.data.synthetic import synthetic_categories
    from maskconver.engine.checkpoint import save_checkpoint

    cfg = load_config("tiny", [*SMALL_UNTRAINED_RUN, *overrides])
    categories = synthetic_categories()
    classes = len(categories.categories)
    torch.manual_seed(0)
    return save_checkpoint(
        folder,
        model=build_model(cfg.model, classes),
        ema=None,
        optimizer=None,
        step=0,
        config=cfg,
        categories=categories,
        num_classes=classes,
    )


def write_random_images(folder: Path, n: int) -> Path:
    """``n`` random 40 x 50 PNGs ``im0.png``... in ``folder`` (created)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"im{i}.png")
    return folder
