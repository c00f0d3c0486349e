"""Contract tests of the DR1Mask network: shapes at odd sizes, gradients, static inference.

The model is built through the meta-architecture table from ``dr1mask_small`` with narrower
widths; the training call goes through the real target generator and criterion.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from maskconver import build
from maskconver.config import Config, load_config
from maskconver.data.synthetic import SyntheticPanoptic
from maskconver.engine.loader import collate_train
from maskconver.engine.step import TrainingModule
from maskconver.inference import TorchModel
from maskconver.meta.dr1mask.model import DR1MaskOutput

SMALL = [
    "model.decoder.channels=16",
    "model.dr1mask.gn_groups=4",
    "model.dr1mask.basis_width=16",
    "model.dr1mask.mask_size=12",
    "model.num_proposals=10",
    "model.dr1mask.pre_nms_topk=40",
    "model.backbone.width=8",
]
ODD = (65, 97)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(*extra: str) -> Config:
    return load_config("dr1mask_small", [*SMALL, *extra])


def _batch(cfg: Config, count: int = 2) -> tuple[torch.Tensor, object, object]:
    dataset = SyntheticPanoptic(count, seed=3, min_size=70, max_size=110)
    cats = dataset.categories
    generator = build.build_target_generator(cfg, cats, cats.num_classes)
    transform = build.build_train_transforms(cfg)
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        sample = transform(dataset[i], rng)
        image = torch.from_numpy(sample.image.copy()).permute(2, 0, 1).float()
        items.append((image, generator(sample)))
    images, targets, _ = collate_train(items)
    return images, targets, cats


def test_eval_outputs_at_an_odd_size_are_static_and_finite() -> None:
    cfg = _cfg()
    torch.manual_seed(0)
    model = build.build_model(cfg.model, 7).eval()
    images = torch.rand(2, 3, *ODD, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        out = model(images)
    assert isinstance(out, DR1MaskOutput)
    strides = [8, 16, 32]
    for maps in (out.cls_logits, out.distances, out.centerness, out.embeddings):
        assert len(maps) == 3
        for x, s in zip(maps, strides):
            assert x.shape[-2:] == (math.ceil(ODD[0] / s), math.ceil(ODD[1] / s))
    assert out.cls_logits[0].shape[1] == 7 and out.embeddings[0].shape[1] == 16
    h4, w4 = math.ceil(ODD[0] / 4), math.ceil(ODD[1] / 4)
    assert out.basis.shape == (2, 16, h4, w4)
    assert out.stuff_logits.shape == (2, 7, h4, w4)
    k = cfg.model.num_proposals
    assert out.panoptic_logits is not None and out.panoptic_logits.shape == (2, 7 + k, h4, w4)
    assert out.boxes is not None and out.boxes.shape == (2, k, 4)
    assert out.scores is not None and out.classes is not None
    assert out.scores.shape == out.classes.shape == (2, k)
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()  # best first
    assert out.boxes[..., 0].min() >= 0 and out.boxes[..., 2].max() <= ODD[1]
    assert out.boxes[..., 1].min() >= 0 and out.boxes[..., 3].max() <= ODD[0]
    for value in out:
        tensors = value if isinstance(value, tuple) else (value,)
        assert all(torch.isfinite(t.float()).all() for t in tensors)


def test_training_call_reaches_every_parameter_at_an_odd_size() -> None:
    cfg = _cfg(f"augment.input_size=[{ODD[0]},{ODD[1]}]")
    torch.manual_seed(0)
    images, targets, cats = _batch(cfg)
    model = build.build_model(cfg.model, cats.num_classes)
    meta = build.meta_architecture(cfg.model)
    step = TrainingModule(
        model, build.build_criterion(cfg, cats.num_classes), teacher_forward=meta.teacher_forward
    ).train()
    losses = step(images, targets)
    assert set(losses) == {
        "loss",
        "loss_cls",
        "loss_box",
        "loss_centerness",
        "loss_mask",
        "loss_unified",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(v.item() > 0 for k, v in losses.items())
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:10]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad


def test_training_call_skips_detection() -> None:
    model = build.build_model(_cfg().model, 7).train()
    out = model(torch.rand(1, 3, 64, 64) * 255, detect=False)
    assert isinstance(out, DR1MaskOutput)
    assert out.panoptic_logits is None and out.boxes is None and out.scores is None


def test_detections_pad_when_there_are_fewer_candidates_than_slots() -> None:
    # a 16 x 16 input has 2x2 + 1 + 1 = 6 locations; with one class, 6 candidates < K = 10
    cfg = _cfg("model.num_proposals=10", "model.dr1mask.pre_nms_topk=10")
    model = build.build_model(cfg.model, 1).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 16, 16) * 255)
    assert out.scores is not None and out.scores.shape == (1, 10)
    assert (out.scores[0, 6:] == 0).all()


def test_traced_and_frozen_model_matches_eager() -> None:
    cfg = _cfg()
    torch.manual_seed(0)
    model = build.build_model(cfg.model, 7).eval()
    images = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(2)) * 255
    eager = TorchModel(model)(images)
    traced = TorchModel(model, optimize=True)(images)
    assert type(traced) is type(eager)
    assert traced.detection_embeddings is not None and traced.scores is not None
    torch.testing.assert_close(traced.scores, eager.scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(traced.panoptic_logits, eager.panoptic_logits, atol=1e-3, rtol=1e-3)
    assert torch.equal(traced.classes, eager.classes)
    # a second, different image goes through the same frozen graph (NMS is not baked in)
    other = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(3)) * 255
    torch.testing.assert_close(
        TorchModel(model, optimize=True)(other).scores,
        TorchModel(model)(other).scores,
        atol=1e-4,
        rtol=1e-4,
    )


def test_factor_switches_change_the_top_layer() -> None:
    widths = {}
    for factors in ("both", "in", "out", "none"):
        model = build.build_model(_cfg(f"model.dr1mask.factors={factors}").model, 7)
        widths[factors] = model.top_layer.conv.out_channels
    assert widths == {"both": 48, "in": 32, "out": 32, "none": 16}


def test_the_config_refuses_what_dr1mask_cannot_build() -> None:
    from maskconver.config import ConfigError

    with pytest.raises(ConfigError, match="decoder.name=fpn"):
        load_config("dr1mask_small", ["model.decoder.name=aspp"])
    with pytest.raises(ConfigError, match="sizes_of_interest needs 2 boundaries"):
        load_config("dr1mask_small", ["model.dr1mask.sizes_of_interest=[16]"])
    with pytest.raises(ConfigError, match="target_stride must divide"):
        load_config("dr1mask_small", ["model.dr1mask.target_stride=3"])
    with pytest.raises(ConfigError, match="gn_groups=7 must divide"):
        load_config("dr1mask_small", ["model.dr1mask.gn_groups=7"])


def test_zero_initialised_factors_start_as_the_plain_top_down_path() -> None:
    torch.manual_seed(0)
    dr1 = build.build_model(_cfg().model, 7).eval()
    plain = build.build_model(_cfg("model.dr1mask.factors=none").model, 7).eval()
    state = {k: v for k, v in dr1.state_dict().items() if not k.startswith("top_layer.")}
    plain.load_state_dict(state, strict=False)
    d = plain.top_layer.embedding_dim
    with torch.no_grad():
        plain.top_layer.conv.weight.copy_(dr1.top_layer.conv.weight[:d])
        plain.top_layer.conv.bias.copy_(dr1.top_layer.conv.bias[:d])
    images = torch.rand(1, 3, 64, 72, generator=torch.Generator().manual_seed(4)) * 255
    with torch.no_grad():
        a, b = dr1(images, detect=False), plain(images, detect=False)
    torch.testing.assert_close(a.basis, b.basis)
    # one optimizer-free nudge of the factor weights changes the basis: the factors are live
    with torch.no_grad():
        dr1.top_layer.conv.weight[d:].normal_(std=0.1)
        moved = dr1(images, detect=False)
    assert not torch.allclose(moved.basis, a.basis)
