"""Contract tests over the build tables themselves: every meta-architecture, every backbone x
every decoder that accepts it (single- and multi-scale), every preset.

Each table entry needs a line in the settings below; ``test_every_table_entry_has_a_test`` fails
when an entry is added to ``build`` without one, so a new backbone, decoder or meta-architecture
cannot land untested.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from maskconver import build
from maskconver.config import (
    BackboneConfig,
    ConfigError,
    DecoderConfig,
    ModelConfig,
    list_presets,
    load_config,
)
from maskconver.data.synthetic import SyntheticPanoptic
from maskconver.engine.loader import collate_train
from maskconver.engine.step import TrainingModule
from maskconver.meta.maskconver.build import center_strides

NUM_CLASSES = 7
BATCH = 2
SIZE = (65, 97)  # odd, not a multiple of any stride
SMALL = [
    "model.head.channels=16",
    "model.head.num_convs=1",
    "model.head.low_level_channels=16",
    "model.decoder.channels=16",
    "model.maskconver.embedding_dim=16",
    "model.maskconver.mlp_hidden=16",
    "model.num_proposals=6",
]
# backbone name -> overrides that keep it small
BACKBONE_SETTINGS: dict[str, list[str]] = {
    "tiny": ["model.backbone.width=8"],
    "mobilenet_mh": ["model.backbone.output_stride=16"],
    "mobilenetv2": ["model.backbone.output_stride=16"],
    "mobilenetv3_large": [],
    "mobilenetv3_small": [],
    "resnet50": [],
    "resnet50_unet": [
        "model.backbone.unet_channels=[16,16,16]",
        "model.backbone.unet_repeats=[1,1,1]",
    ],
}
MULTI = [
    "model.maskconver.multiscale=true",
    "model.maskconver.max_level=5",
    "model.decoder.max_level=5",
    "model.maskconver.targets.level_low=[0,40,80]",
    "model.maskconver.targets.level_high=[64,128,10000000]",
]
# decoder name -> the modes it supports: single-scale always, multi-scale for pyramids
DECODER_SETTINGS: dict[str, dict[str, list[str]]] = {
    "aspp": {"single": []},
    "fpn": {
        "single": [],
        "multi": MULTI,
    },
    "maskconver_fpn": {
        "single": [],
        "multi": MULTI,
    },
    "bifpn": {"single": ["model.decoder.bifpn_repeats=2"], "multi": MULTI},
    "convnext_unet": {"single": ["model.decoder.unet_repeats=[1]"], "multi": MULTI},
    "dr1basis": {
        "single": ["model.decoder.max_level=5", "model.decoder.dr1.width=16"],
        "multi": [*MULTI, "model.decoder.dr1.width=16"],
    },
}
META_SETTINGS: dict[str, list[str]] = {
    "maskconver": [],
    "dr1mask": [  # its pyramid is an FPN; tests/test_dr1mask_model.py covers it further
        "model.decoder.name=fpn",
        "model.decoder.max_level=5",
        "model.dr1mask.sizes_of_interest=[16,32]",
        "model.dr1mask.gn_groups=8",
        "model.dr1mask.tower_convs=1",
        "model.dr1mask.basis_width=16",
        "model.dr1mask.pre_nms_topk=50",
        "model.dr1mask.mask_size=8",
    ],
    "kmax": [  # tests/test_kmax_*.py cover it further
        "model.kmax.decoder_channels=[32,16,16,16]",
        "model.kmax.decoder_blocks=[1,1,1,1]",
        "model.kmax.axial_heads=2",
        "model.kmax.transformer_blocks=[1,1,1]",
        "model.kmax.query_dim=16",
        "model.kmax.pixel_dim=8",
        "model.kmax.attention_heads=2",
        "model.kmax.ffn_dim=16",
        "model.kmax.loss.instance_points=64",
        "model.kmax.loss.semantic_points=64",
        "model.kmax.loss.semantic_channels=8",
        "model.kmax.loss.remask_stages=2",
        "model.kmax.loss.reclass_eta=0.1",
    ],
}
CASES = [
    (backbone, decoder, mode)
    for backbone in BACKBONE_SETTINGS
    for decoder, modes in DECODER_SETTINGS.items()
    for mode in modes
]


def _literal_choices(cls: type, field: str) -> set[str]:
    return set(typing.get_args(typing.get_type_hints(cls)[field]))


def test_every_table_entry_has_a_test() -> None:
    assert set(BACKBONE_SETTINGS) == set(build.BACKBONES)
    assert set(DECODER_SETTINGS) == set(build.DECODERS)
    assert set(META_SETTINGS) == set(build.META_ARCHITECTURES)
    # the config's choices are exactly the table names (no name the builder cannot build)
    assert _literal_choices(BackboneConfig, "name") == set(build.BACKBONES)
    assert _literal_choices(DecoderConfig, "name") == set(build.DECODERS)
    assert _literal_choices(ModelConfig, "meta_architecture") == set(build.META_ARCHITECTURES)


def test_unknown_meta_architecture_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="is not one of \\['maskconver', 'dr1mask', 'kmax'\\]"):
        load_config("tiny", ["model.meta_architecture=nope"])
    cfg = load_config("tiny")
    bad = ModelConfig(meta_architecture="maskconver")
    object.__setattr__(bad, "meta_architecture", "nope")  # bypass the config check
    with pytest.raises(ConfigError, match="unknown meta-architecture 'nope'; choose from"):
        build.build_model(bad, NUM_CLASSES)
    with pytest.raises(ConfigError, match="\\['dr1mask', 'kmax', 'maskconver'\\]"):
        build.meta_architecture(bad)
    assert build.meta_architecture(cfg.model) is build.META_ARCHITECTURES["maskconver"]()


def _teacher_slots(center_logits: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """GT slots on the last pixel of every level (every level's norms get gradients) + padding."""
    offsets, total = [], 0
    for x in center_logits:
        total += x.shape[-2] * x.shape[-1]
        offsets.append(total - 1)
    indices = torch.tensor([*offsets, 0])
    classes = torch.tensor([i % NUM_CLASSES for i in range(len(offsets))] + [-1])
    return indices.repeat(BATCH, 1), classes.repeat(BATCH, 1)


@pytest.mark.parametrize(("backbone", "decoder", "mode"), CASES)
def test_backbone_decoder_contract(backbone: str, decoder: str, mode: str) -> None:
    overrides = [
        f"model.backbone.name={backbone}",
        f"model.decoder.name={decoder}",
        *SMALL,
        *BACKBONE_SETTINGS[backbone],
        *DECODER_SETTINGS[decoder][mode],
    ]
    cfg = load_config("tiny", overrides)
    torch.manual_seed(0)
    model = build.build_model(cfg.model, NUM_CLASSES)
    images = torch.rand(BATCH, 3, *SIZE, generator=torch.Generator().manual_seed(1)) * 255
    model.eval()
    with torch.no_grad():
        out = model(images)
    levels = len(center_strides(cfg.model))
    assert len(out.center_logits) == levels
    for x, stride in zip(out.center_logits, center_strides(cfg.model), strict=True):
        assert x.shape[:2] == (BATCH, NUM_CLASSES)
        assert abs(x.shape[-2] - SIZE[0] / stride) <= 1 and abs(x.shape[-1] - SIZE[1] / stride) <= 1
    k = cfg.model.num_proposals
    assert out.mask_logits.shape[:2] == (BATCH, k) and out.scores.shape == (BATCH, k)
    assert out.pixel_embeddings is not None
    assert out.pixel_embeddings.shape[:2] == (BATCH, cfg.model.maskconver.embedding_dim)
    assert torch.isfinite(out.mask_logits).all()

    model.train()
    indices, classes = _teacher_slots(out.center_logits)
    tout = model(images, indices, classes)
    assert type(tout) is type(out)
    loss = sum(x.sum() for x in tout.center_logits) + tout.mask_logits.sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:10]}"


@pytest.mark.parametrize("name", sorted(META_SETTINGS))
def test_meta_architecture_trains_and_predicts_through_the_table(name: str) -> None:
    """Targets -> teacher forward -> criterion -> backward -> eval forward -> post-processor."""
    cfg = load_config(
        "tiny",
        [
            f"model.meta_architecture={name}",
            "augment.input_size=[64, 64]",
            "eval.input_size=64",
            *SMALL,
            *META_SETTINGS[name],
        ],
    )
    dataset = SyntheticPanoptic(2, seed=0, min_size=64, max_size=80)
    cats = dataset.categories
    meta = build.meta_architecture(cfg.model)
    model = build.build_model(cfg.model, cats.num_classes)
    generator = build.build_target_generator(cfg, cats, cats.num_classes)
    transform = build.build_train_transforms(cfg)
    rng = np.random.default_rng(0)
    samples = [transform(dataset[i], rng) for i in range(2)]
    images, targets, _ = collate_train(  # stacks each meta-architecture's own targets
        [(torch.from_numpy(s.image.copy()).permute(2, 0, 1).float(), generator(s)) for s in samples]
    )
    step = TrainingModule(
        model, build.build_criterion(cfg, cats.num_classes), teacher_forward=meta.teacher_forward
    ).train()
    losses = step(images, targets)
    assert "loss" in losses and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        out = model(images)
    post = build.build_postprocessor(cfg, cats, cats.num_classes)
    preds = post(out, [(64, 64)] * 2, [(32, 40), (64, 64)], (64, 64))
    assert [p.panoptic.shape for p in preds] == [(32, 40), (64, 64)]


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_builds_through_the_table(name: str) -> None:
    cfg = load_config(name)
    with torch.device("meta"):
        model = build.build_model(cfg.model, cfg.model.num_classes or NUM_CLASSES)
    assert cfg.model.meta_architecture in build.META_ARCHITECTURES
    assert sum(p.numel() for p in model.parameters()) > 0


def test_hard_sigmoid_reaches_peak_scores_and_mask_probabilities() -> None:
    from maskconver.meta.maskconver.peaks import hard_sigmoid

    cfg = load_config("tiny", ["model.maskconver.hard_sigmoid=true", *SMALL])
    model = build.build_model(cfg.model, NUM_CLASSES).eval()
    assert model.hard_sigmoid
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        out = model(images)
    # the K scores are the K largest hard-sigmoid peak values of the heatmap
    (logits,) = out.center_logits
    flat_logits = logits.flatten(2).transpose(1, 2)  # [1, N, C]
    at = flat_logits[0, out.center_indices[0], out.classes[0]]
    torch.testing.assert_close(out.scores[0], hard_sigmoid(at))
    plain = build.build_model(load_config("tiny", SMALL).model, NUM_CLASSES).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        soft = plain(images)
    assert not torch.allclose(soft.scores, out.scores)  # the flag changed the scores
    cats = SyntheticPanoptic(1).categories
    assert build.build_postprocessor(cfg, cats, NUM_CLASSES).hard_sigmoid
    assert not build.build_postprocessor(load_config("tiny"), cats, NUM_CLASSES).hard_sigmoid
