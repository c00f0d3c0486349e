"""A model trained on the synthetic shapes only says so once when loaded (API and ``predict``).

The checkpoints are written directly (``engine.checkpoint.save_checkpoint`` of an untrained tiny
model): one with the default ``data.root`` (None: the embedded synthetic dataset) and one with a
dataset root, which must load silently.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import save_untrained_tiny
from PIL import Image

from maskconver.config import load_config
from maskconver.predictor import (
    SYNTHETIC_ONLY_NOTE,
    Predictor,
    SyntheticOnlyWarning,
    trained_on_synthetic_only,
)


@pytest.fixture(scope="module")
def synthetic_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained_tiny(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained_tiny(tmp_path_factory.mktemp("real"), ["data.root=/data/coco"])


def test_the_config_records_the_synthetic_dataset() -> None:
    assert trained_on_synthetic_only(load_config("tiny", []))
    assert not trained_on_synthetic_only(load_config("tiny", ["data.root=/data/coco"]))


def test_from_checkpoint_warns_once_for_synthetic_only(synthetic_ckpt: Path) -> None:
    with pytest.warns(SyntheticOnlyWarning) as record:
        predictor = Predictor.from_checkpoint(synthetic_ckpt)
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and "synthetic shapes" in message and "real objects" in message
    assert str(synthetic_ckpt) in message
    assert predictor.synthetic_only


def test_a_real_dataset_checkpoint_loads_silently(real_ckpt: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SyntheticOnlyWarning)
        predictor = Predictor.from_checkpoint(real_ckpt)
    assert not predictor.synthetic_only


def test_warning_can_be_turned_off(synthetic_ckpt: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SyntheticOnlyWarning)
        Predictor.from_checkpoint(synthetic_ckpt, warn_synthetic=False)


@pytest.mark.parametrize("synthetic", [True, False], ids=["synthetic", "real"])
def test_predict_prints_one_line(
    synthetic_ckpt: Path,
    real_ckpt: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    synthetic: bool,
) -> None:
    from maskconver.cli import main

    image = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 48, 3), 128, dtype=np.uint8)).save(image)
    checkpoint = synthetic_ckpt if synthetic else real_ckpt
    with warnings.catch_warnings():
        warnings.simplefilter("error", SyntheticOnlyWarning)  # the CLI prints, never warns
        output = str(tmp_path / "out")
        args = ["--input", str(image), "--checkpoint", str(checkpoint), "--output", output]
        code = main(["predict", *args, "--no-overlay"])
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "synthetic" in line]
    assert lines == ([f"warning: {SYNTHETIC_ONLY_NOTE}"] if synthetic else [])
