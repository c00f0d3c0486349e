"""The onnxruntime backend bounds a huge image's memory as torch does, and failures name images.

The exported graph upsamples all K proposals to the merge canvas at once (static shapes), so
the backend caps the canvas at ``MAX_GRAPH_CANVAS_VALUES / K`` pixels (and the config's
``postprocess.max_canvas_pixels``) and enlarges the map outside the graph (nearest). Measured
on an 8000 x 6000 image (tiny preset, K = 20, one thread): peak RSS 6.1 GB before, 1.2 GB
after; torch 1.1 GB. Here the cap is shrunk so a small image exercises the same path.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import save_untrained_tiny
from PIL import Image

from maskconver.postprocess.merge_fast import TILE_MAPS

pytest.importorskip("onnxruntime")

from maskconver.export import runtime  # noqa: E402
from maskconver.inference import PredictionError, TorchModel  # noqa: E402
from maskconver.predictor import Predictor  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained_tiny(tmp_path_factory.mktemp("ckpt"), ["model.num_proposals=8"])


@pytest.fixture(scope="module")
def onnx_path(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from maskconver.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(checkpoint, path)
    return path


def test_graph_canvas_cap_bounds_the_canvas_maps() -> None:
    values = runtime.MAX_GRAPH_CANVAS_VALUES
    assert runtime.graph_canvas_cap(0, 20) == values // 20  # the exact merge: K maps
    assert runtime.graph_canvas_cap(1 << 24, 20) == values // 20  # 3.3 MP < 16 MP
    assert runtime.graph_canvas_cap(1000, 20) == 1000  # the config's is smaller
    assert runtime.graph_canvas_cap(0, 1) == values  # K not static: counted as 1
    # the fast merge's canvas maps do not grow with K
    assert runtime.graph_canvas_cap(0, 50, fast_merge=True) == values // TILE_MAPS


def test_a_huge_image_merges_on_a_capped_canvas(
    onnx_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = Predictor.from_onnx(onnx_path, threads=1)
    model = predictor.model
    assert isinstance(model, runtime.OnnxPanopticModel)
    model.canvas_cap = 30 * 40  # a 60 x 80 image is 4x over it
    sizes: list[tuple[int, int]] = []
    run = model.run

    def spy(image: np.ndarray, valid: Any, output_size: Any) -> dict[str, np.ndarray]:
        sizes.append((int(output_size[0]), int(output_size[1])))
        return run(image, valid, output_size)

    monkeypatch.setattr(model, "run", spy)
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="ONNX merge-canvas cap"):
        result = predictor(image)
    assert sizes == [(30, 40)]  # the graph's canvas, scaled by sqrt(1 / 4)
    assert result.panoptic.shape == (60, 80)
    counts = np.bincount(result.panoptic.ravel(), minlength=len(result.segments) + 1)
    assert [s.area for s in result.segments] == [int(counts[s.id]) for s in result.segments]
    # nearest enlargement by 2: every 2 x 2 block holds one id
    blocks = result.panoptic.reshape(30, 2, 40, 2)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_a_small_image_is_unchanged_by_the_cap(onnx_path: Path) -> None:
    predictor = Predictor.from_onnx(onnx_path, threads=1)
    image = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    assert predictor(image).panoptic.shape == (50, 70)


def _image_file(folder: Path) -> Path:
    path = folder / "holiday.png"
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_an_onnx_failure_names_the_image(
    onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = Predictor.from_onnx(onnx_path, threads=1)

    class OrtFail(Exception):  # onnxruntime's errors derive from Exception only
        pass

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OrtFail("Failed to allocate memory for requested buffer of size 5000000000")

    monkeypatch.setattr(predictor.model, "session", SimpleNamespace(run=fail))
    with pytest.raises(PredictionError, match=r"holiday\.png \(30x40\).*allocate memory"):
        predictor(_image_file(tmp_path))


def test_a_torch_failure_names_the_image(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = Predictor.from_checkpoint(checkpoint, warn_synthetic=False)

    def fail(self: TorchModel, images: Any) -> Any:
        raise RuntimeError("DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr(TorchModel, "__call__", fail)
    with pytest.raises(PredictionError, match=r"holiday\.png \(30x40\).*not enough memory"):
        predictor(_image_file(tmp_path))
    with pytest.raises(PredictionError, match=r"a 30x40 image"):  # an array has no name
        predictor(np.zeros((30, 40, 3), dtype=np.uint8))
