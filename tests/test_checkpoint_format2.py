"""Format-2 checkpoints of both meta-architectures load with today's code and give the same results.

``tests/data/format2/*`` were written by commit 7c1a2b3 (checkpoint format 2) with
``make_format2_checkpoints.py``; each holds the raw outputs and the panoptic results that
version computed on two stored scenes. The variants set non-default values in the config
sections that move under ``model.maskconver`` / ``model.dr1mask``, so a wrong migration shows
as a config value or an output that changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from maskconver.build import build_eval_transforms, build_postprocessor
from maskconver.config import merge_overrides
from maskconver.data.types import PanopticSample
from maskconver.engine.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from maskconver.inference import images_to_tensor, predict_samples

FORMAT2 = Path(__file__).parent / "data" / "format2"
VARIANTS = ["maskconver_tiny", "maskconver_region", "dr1mask_small"]
IMAGE_KEYS = ("images", "image_0", "image_1", "panoptic_0", "panoptic_1")
NUM_IMAGES = 2

# (value, path in the new layout, path in the old one); the new layout is tried first
SETTINGS: dict[str, list[tuple[Any, str, str]]] = {
    "maskconver_tiny": [
        ("maskconver", "model.meta_architecture", "model.meta_architecture"),
        ("add", "model.maskconver.fusion", "model.fusion"),
        ("gelu", "model.maskconver.mlp_activation", "model.mlp_activation"),
        (3.0, "model.maskconver.loss.bce_weight", "loss.bce_weight"),
        (4.0, "model.maskconver.loss.dice_weight", "loss.dice_weight"),
        (0.5, "model.maskconver.loss.semantic_weight", "loss.semantic_weight"),
        ("mass", "model.maskconver.targets.thing_center", "targets.thing_center"),
        ("mass", "model.maskconver.targets.stuff_center", "targets.stuff_center"),
        (0.1, "model.maskconver.merge.object_threshold", "postprocess.object_threshold"),
        (0.6, "model.maskconver.merge.overlap_threshold", "postprocess.overlap_threshold"),
        (24, "model.maskconver.merge.min_area", "postprocess.min_area"),
        ("maskformer", "model.maskconver.merge.mode", "postprocess.merge"),
    ],
    "maskconver_region": [
        ("maskconver", "model.meta_architecture", "model.meta_architecture"),
        ("region", "model.maskconver.stuff_mode", "model.stuff_mode"),
        (1.0, "model.maskconver.loss.semantic_weight", "loss.semantic_weight"),
        (0.15, "model.maskconver.merge.object_threshold", "postprocess.object_threshold"),
        (20, "model.maskconver.merge.min_area", "postprocess.min_area"),
        ("mul", "model.maskconver.fusion", "model.fusion"),  # the tiny preset's
        ("reference", "model.maskconver.merge.mode", "postprocess.merge"),
    ],
    "dr1mask_small": [
        ("dr1mask", "model.meta_architecture", "model.meta_architecture"),
        (True, "model.dr1mask.merge.box_crop", "model.dr1mask.box_crop"),
        ("argmax", "model.dr1mask.merge.mode", "model.dr1mask.merge"),
        (0.03, "model.dr1mask.merge.object_threshold", "postprocess.object_threshold"),
        (8, "model.dr1mask.merge.min_area", "postprocess.min_area"),
        (0.02, "model.dr1mask.score_threshold", "model.dr1mask.score_threshold"),
        (0.5, "model.dr1mask.nms_iou", "model.dr1mask.nms_iou"),
    ],
}


def _checkpoint(variant: str) -> Path:
    (ckpt,) = sorted((FORMAT2 / variant).glob("step_*"))
    return ckpt


def _setting(cfg: Any, new: str, old: str) -> Any:
    """The value at ``new`` (today's layout), else at ``old`` (the layout being moved away)."""
    for path in (new, old):
        node = cfg
        for part in path.split("."):
            if not hasattr(node, part):
                break
            node = getattr(node, part)
        else:
            return node
    raise AssertionError(f"the config has neither {new!r} nor {old!r}")


def _raw(output: Any) -> dict[str, torch.Tensor]:
    """Every tensor field of a model output, named as the fixtures name them."""
    flat: dict[str, torch.Tensor] = {}
    for name, value in output._asdict().items():
        if isinstance(value, tuple):
            flat.update({f"{name}_{i}": v for i, v in enumerate(value)})
        elif value is not None:
            flat[name] = value
    return flat


def _samples(cfg: Any, expected: dict[str, torch.Tensor]) -> list[PanopticSample]:
    transform = build_eval_transforms(cfg)
    samples = []
    for i in range(NUM_IMAGES):
        image = expected[f"image_{i}"].numpy()
        blank = np.zeros(image.shape[:2], np.int32)
        samples.append(transform(PanopticSample(image=image, panoptic=blank, segments=[])))
    return samples


def _check_outputs(
    model: torch.nn.Module, cfg: Any, categories: Any, num_classes: int, ckpt: Path
) -> None:
    """Raw outputs, panoptic maps and segments equal the ones stored next to ``ckpt``."""
    expected = load_file(str(ckpt / "expected_outputs.safetensors"))
    samples = _samples(cfg, expected)
    batch = images_to_tensor([s.image for s in samples])
    assert torch.equal(batch, expected["images"].float())
    with torch.no_grad():
        out = _raw(model(batch))
    stored = {k: v for k, v in expected.items() if k not in IMAGE_KEYS}
    assert set(stored) <= set(out), sorted(set(stored) - set(out))
    assert ("semantic_logits" in out) == ("semantic_logits" in stored)
    for name, want in stored.items():
        got = out[name]
        if not want.is_floating_point():
            assert torch.equal(got, want), name
        else:  # format 1's tolerances per unit of the tensor's largest magnitude
            atol = (1e-6 if name == "scores" else 1e-5) * max(1.0, want.abs().max().item())
            torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=name)

    # the maps were stored with the exact merge; the default fast merge (format 3's
    # model.maskconver.merge.algorithm) agrees on >= 99.9 % of pixels (tests/test_merge_fast.py)
    exact = (
        merge_overrides(cfg, ["model.maskconver.merge.algorithm=exact"])
        if cfg.model.meta_architecture == "maskconver"
        else cfg
    )
    post = build_postprocessor(exact, categories, num_classes)
    predictions = predict_samples(model, post, samples)
    fast = predict_samples(model, build_postprocessor(cfg, categories, num_classes), samples)
    for a, b in zip(fast, predictions):
        assert (a.panoptic == b.panoptic).mean() >= 0.999
    segments = json.loads((ckpt / "expected_segments.json").read_text())
    assert len(predictions) == len(segments) == NUM_IMAGES
    for i, (prediction, want_segments) in enumerate(zip(predictions, segments)):
        assert prediction.panoptic.dtype == np.int32
        np.testing.assert_array_equal(prediction.panoptic, expected[f"panoptic_{i}"].numpy())
        got_segments = [
            {
                "id": s.id,
                "category_id": s.category_id,
                "isthing": bool(s.isthing),
                "area": int(s.area),
            }
            for s in prediction.segments
        ]
        assert got_segments == [
            {k: s[k] for k in ("id", "category_id", "isthing", "area")} for s in want_segments
        ]
        np.testing.assert_allclose(
            [s.score for s in prediction.segments],
            [s["score"] for s in want_segments],
            rtol=0,
            atol=1e-6,
        )


@pytest.mark.parametrize("variant", VARIANTS)
def test_format2_checkpoints_load_and_reproduce_their_results(variant: str) -> None:
    ckpt = _checkpoint(variant)
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["format"] == 2
    model, cfg, categories, num_classes = load_model(ckpt)
    assert meta["meta_architecture"] == cfg.model.meta_architecture
    assert num_classes == 7
    assert [c.id for c in categories.categories] == [1, 3, 7, 12, 20, 31, 44]
    for value, new, old in SETTINGS[variant]:
        assert _setting(cfg, new, old) == value, (new, old)
    _check_outputs(model, cfg, categories, num_classes, ckpt)


def test_the_fixtures_hold_what_they_claim() -> None:
    """Both meta-architectures, several segments per image, things and stuff."""
    for variant in VARIANTS:
        segments = json.loads((_checkpoint(variant) / "expected_segments.json").read_text())
        found = [s for image in segments for s in image]
        assert all(image for image in segments), variant
        assert {s["isthing"] for s in found} == {True, False}, variant
    assert "semantic_logits" in load_file(
        str(_checkpoint("maskconver_region") / "expected_outputs.safetensors")
    )
    loaded = load_checkpoint(_checkpoint("maskconver_tiny"))
    assert loaded.format == 2 and loaded.trainer_state is None
    assert loaded.criterion_state  # the training-only semantic head of loss.semantic_weight


@pytest.mark.parametrize("variant", VARIANTS)
def test_resaving_a_format2_checkpoint_writes_the_current_format(
    variant: str, tmp_path: Path
) -> None:
    loaded = load_checkpoint(_checkpoint(variant))
    model, cfg, categories, num_classes = load_model(_checkpoint(variant))
    saved = save_checkpoint(
        tmp_path,
        model=model,
        ema=None,
        optimizer=None,
        step=loaded.step,
        config=cfg,
        categories=categories,
        num_classes=num_classes,
    )
    meta = json.loads((saved / "meta.json").read_text())
    assert meta["format"] == FORMAT_VERSION
    assert meta["meta_architecture"] == cfg.model.meta_architecture
    again = load_checkpoint(saved)
    assert again.format == FORMAT_VERSION and again.step == loaded.step
    assert again.config == cfg
    reloaded, cfg2, categories2, num_classes2 = load_model(saved)
    for value, new, old in SETTINGS[variant]:
        assert _setting(cfg2, new, old) == value, (new, old)
    _check_outputs(reloaded, cfg2, categories2, num_classes2, _checkpoint(variant))
