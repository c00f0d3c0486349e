"""Checkpoints written by an older format still load, give the same outputs, and migrate.

``tests/data/format1/*`` were written by maskconver 0.1.0 (checkpoint format 1, commit 3e4dd19)
with ``make_format1_checkpoints.py``; each holds the outputs that version computed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from maskconver.config import ConfigError, load_config
from maskconver.engine.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

FORMAT1 = Path(__file__).parent / "data" / "format1"
VARIANTS = ["aspp", "fpn", "maskconver_fpn_multiscale", "hard_sigmoid"]


def _checkpoint(variant: str) -> Path:
    return FORMAT1 / variant / "step_000003"


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "hard_sigmoid"])
def test_format1_checkpoints_load_and_reproduce_their_outputs(variant: str) -> None:
    ckpt = _checkpoint(variant)
    assert json.loads((ckpt / "meta.json").read_text())["format"] == 1
    model, cfg, categories, num_classes = load_model(ckpt)
    expected = load_file(str(ckpt / "expected_outputs.safetensors"))
    with torch.no_grad():
        out = model(expected["images"])
    torch.testing.assert_close(out.mask_logits, expected["mask_logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.scores, expected["scores"], rtol=0, atol=1e-6)
    assert torch.equal(out.classes, expected["classes"])
    assert torch.equal(out.center_indices, expected["center_indices"])
    for i, logits in enumerate(out.center_logits):
        torch.testing.assert_close(logits, expected[f"center_logits_{i}"], rtol=0, atol=1e-5)
    assert cfg.model.meta_architecture == "maskconver" and num_classes == 7
    assert [c.id for c in categories.categories] == [1, 3, 7, 12, 20, 31, 44]


def test_format1_hard_sigmoid_moves_to_the_model() -> None:
    loaded = load_checkpoint(_checkpoint("hard_sigmoid"))
    assert loaded.format == 1
    assert loaded.config.model.maskconver.hard_sigmoid is True
    model, cfg, categories, num_classes = load_model(_checkpoint("hard_sigmoid"))
    assert model.hard_sigmoid  # type: ignore[attr-defined]
    from maskconver.build import build_postprocessor

    assert build_postprocessor(cfg, categories, num_classes).hard_sigmoid
    plain = load_checkpoint(_checkpoint("aspp"))
    assert plain.config.model.maskconver.hard_sigmoid is False


def test_resaving_an_old_checkpoint_writes_the_current_format(tmp_path: Path) -> None:
    loaded = load_checkpoint(_checkpoint("hard_sigmoid"))
    model, *_ = load_model(_checkpoint("hard_sigmoid"))
    saved = save_checkpoint(
        tmp_path,
        model=model,
        ema=None,
        optimizer=None,
        step=loaded.step,
        config=loaded.config,
        categories=loaded.categories,
        num_classes=loaded.num_classes,
    )
    meta = json.loads((saved / "meta.json").read_text())
    assert meta["format"] == FORMAT_VERSION == 3
    assert meta["meta_architecture"] == "maskconver"
    assert "hard_sigmoid" not in (saved / "config.yaml").read_text().split("postprocess:")[1]
    again = load_checkpoint(saved)
    assert again.format == 3 and again.config.model.maskconver.hard_sigmoid is True


def test_a_newer_format_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(_checkpoint("aspp"), copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["format"] = FORMAT_VERSION + 1
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="newer than this maskconver"):
        load_checkpoint(copy)


def test_an_old_key_in_a_config_file_names_its_new_place(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("postprocess:\n  hard_sigmoid: true\n")
    with pytest.raises(
        ConfigError, match="'postprocess.hard_sigmoid' moved to 'model.maskconver.hard_sigmoid'"
    ):
        load_config(str(path))


def test_predictor_runs_an_old_checkpoint() -> None:
    from maskconver.predictor import Predictor

    predictor = Predictor.from_checkpoint(_checkpoint("fpn"))
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    result = predictor(image)
    assert result.panoptic.shape == (50, 70)
