"""``Predictor``: any image mode/size in, a consistent ``PanopticPrediction`` at that size out.

The checkpoint comes from a real 2-step training run (module-scoped, about 10 s). Its
post-processing is opened up (MaskFormer merge with every threshold 0) so that even an
untrained model returns segments and the id/segment consistency checks have something to check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_UNTRAINED_RUN
from PIL import Image

from maskconver.config import load_config
from maskconver.data.image_io import ImageReadError
from maskconver.postprocess.segments import PanopticPrediction
from maskconver.predictor import Predictor, as_rgb_array

TINY_RUN = [
    "train.max_steps=2",
    "data.synthetic_train=4",
    "data.synthetic_val=2",
    "data.synthetic_min_size=48",
    "data.synthetic_max_size=64",
    *SMALL_UNTRAINED_RUN,
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from maskconver.engine.train import train

    out = tmp_path_factory.mktemp("predictor_run")
    summary = train(load_config("tiny", TINY_RUN), out, progress=False)
    return Path(summary["checkpoint"])


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(checkpoint)


def assert_consistent(
    pred: PanopticPrediction, shape: tuple[int, int], predictor: Predictor
) -> None:
    """Ids in the map == segment ids; areas, categories and thing flags agree with the map."""
    assert pred.panoptic.shape == shape
    assert pred.panoptic.dtype == np.int32
    ids, counts = np.unique(pred.panoptic, return_counts=True)
    area = {int(i): int(c) for i, c in zip(ids, counts) if i != 0}
    assert sorted(area) == sorted(s.id for s in pred.segments)
    assert len({s.id for s in pred.segments}) == len(pred.segments)
    for seg in pred.segments:
        category = predictor.categories.by_id[seg.category_id]  # KeyError: unknown id
        assert seg.isthing == category.isthing
        assert seg.area == area[seg.id]
        assert 0.0 <= seg.score <= 1.0


def test_checkpoint_attributes(predictor: Predictor) -> None:
    # the synthetic dataset's non-contiguous ids survive the round trip through the checkpoint
    assert [c.id for c in predictor.categories.categories] == [1, 3, 7, 12, 20, 31, 44]
    assert predictor.cfg.eval.input_size == 64
    assert not predictor.model.module.training


def test_grayscale_odd_size_from_pil_and_file(predictor: Predictor, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (37, 53), dtype=np.uint8), mode="L")
    from_pil = predictor(gray)
    assert_consistent(from_pil, (37, 53), predictor)
    assert from_pil.segments, "opened-up thresholds must give at least one segment"
    path = tmp_path / "gray.png"
    gray.save(path)
    from_file = predictor(path)
    from_str = predictor(str(path))
    # the same pixels through three input routes give the same prediction
    np.testing.assert_array_equal(from_file.panoptic, from_pil.panoptic)
    np.testing.assert_array_equal(from_str.panoptic, from_pil.panoptic)


def test_rgba_pil_and_array(predictor: Predictor) -> None:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (70, 45, 4), dtype=np.uint8)
    from_array = predictor(rgba)
    from_pil = predictor(Image.fromarray(rgba, mode="RGBA"))
    assert_consistent(from_array, (70, 45), predictor)
    np.testing.assert_array_equal(from_array.panoptic, from_pil.panoptic)


def test_predict_batch_keeps_order_and_sizes(predictor: Predictor) -> None:
    rng = np.random.default_rng(2)
    shapes = [(37, 53), (64, 64), (20, 90), (100, 31), (5, 7)]
    images = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in shapes]
    batched = predictor.predict_batch(images, batch_size=2)  # 3 forwards: 2 + 2 + 1
    assert [p.panoptic.shape for p in batched] == shapes
    for pred, shape in zip(batched, shapes):
        assert_consistent(pred, shape, predictor)
    # a batch of one is the same computation as __call__
    single = predictor(images[0])
    np.testing.assert_array_equal(single.panoptic, predictor.predict_batch(images[:1])[0].panoptic)


def test_as_rgb_array_conversions() -> None:
    # grayscale [H, W] and [H, W, 1]: the value is copied to R, G and B
    gray = np.array([[0, 7], [128, 255]], dtype=np.uint8)
    expected = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(as_rgb_array(gray), expected)
    np.testing.assert_array_equal(as_rgb_array(gray[:, :, None]), expected)
    # RGBA composited on black: alpha 255 keeps the colour, alpha 0 gives black,
    # alpha 51 (= 0.2) gives rint(200 * 0.2) = 40
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 200, 200, 51]]], dtype=np.uint8)
    np.testing.assert_array_equal(
        as_rgb_array(rgba), np.array([[[200, 100, 50], [0, 0, 0], [40, 40, 40]]], dtype=np.uint8)
    )
    # float arrays above 1 are in 0..255 and rounded; float arrays in 0..1 are scaled by 255
    np.testing.assert_array_equal(
        as_rgb_array(np.full((1, 1, 3), 1.6)), np.full((1, 1, 3), 2, np.uint8)
    )
    np.testing.assert_array_equal(
        as_rgb_array(np.array([[[0.0, 0.5, 1.0]]])), np.array([[[0, 128, 255]]], np.uint8)
    )  # rint(127.5) = 128
    # integer arrays are never scaled (a 0/1 mask image stays 0/1)
    np.testing.assert_array_equal(as_rgb_array(np.ones((1, 1, 3), np.int64)), np.ones((1, 1, 3)))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 5), dtype=np.uint8), r"\(4, 4, 5\)"),
        (np.zeros((2, 3, 4, 3), dtype=np.uint8), r"\(2, 3, 4, 3\)"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
        (np.full((2, 2, 3), 300.0), "0..255"),
        (np.full((2, 2, 3), np.nan), "0..255"),
    ],
)
def test_bad_arrays_are_named(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        as_rgb_array(image)


def test_bad_inputs(predictor: Predictor, tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="missing.jpg"):
        predictor(tmp_path / "missing.jpg")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="corrupt.png"):
        predictor(corrupt)
    with pytest.raises(TypeError, match="list"):
        predictor([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        predictor.predict_batch([np.zeros((4, 4, 3), np.uint8)], batch_size=0)
