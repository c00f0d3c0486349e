"""MaskConver contract over every preset and every backbone x decoder pairing in ``build.py``.

For each case: output shapes at odd input sizes, the same output type in train and eval, teacher
forcing reaches EVERY parameter, no NaN, deterministic eval, teacher-forced scores equal the
heatmap probability at the GT index/class.
"""

from __future__ import annotations

import functools

import pytest
import torch

from maskconver.build import build_model
from maskconver.config import load_config
from maskconver.meta.maskconver.model import MaskConver
from maskconver.meta.maskconver.outputs import MaskConverOutput

NUM_CLASSES = 7
BATCH = 2

# name -> (preset, overrides, input size); heavy parts shrunk so the whole file stays fast
SMALL_HEADS = [
    "model.head.channels=32",
    "model.head.num_convs=1",
    "model.maskconver.embedding_dim=16",
    "model.maskconver.mlp_hidden=32",
]
SMALL_UNET = [
    "model.num_classes=null",
    "model.backbone.unet_repeats=[1,1,1]",
    "model.backbone.unet_channels=[32,32,32]",
    "model.decoder.channels=32",
    "model.num_proposals=30",
    *SMALL_HEADS,
]
CASES: dict[str, tuple[str, list[str], tuple[int, int]]] = {
    "tiny": ("tiny", [], (129, 97)),
    "mobilenet_mh_256": ("mobilenet_mh_256", ["model.num_classes=null"], (65, 63)),
    "mobilenet_mh_640": ("mobilenet_mh_640", ["model.num_classes=null", *SMALL_HEADS], (63, 65)),
    "resnet50_unet": ("resnet50_unet", SMALL_UNET, (64, 64)),
    "tiny+fpn": ("tiny", ["model.decoder.name=fpn"], (129, 97)),
    "tiny+stride8_masks": ("tiny", ["model.maskconver.mask_level=null"], (129, 97)),
    "tiny+maskconver_fpn+multiscale": (
        "tiny",
        [
            "model.decoder.name=maskconver_fpn",
            "model.decoder.channels=32",
            "model.decoder.fusion=concat",
            "model.decoder.separable=true",
            "model.decoder.norm=ln",
            "model.maskconver.multiscale=true",
            "model.head.norm=ln",
            "model.maskconver.fusion=add",
            "model.maskconver.targets.level_low=[0,1,2,3,4]",
            "model.maskconver.targets.level_high=[1,2,3,4,5]",
            *SMALL_HEADS,
        ],
        (129, 97),
    ),
    "tiny+fpn+multiscale": (
        "tiny",
        [
            "model.decoder.name=fpn",
            "model.decoder.channels=32",
            "model.maskconver.multiscale=true",
            "model.maskconver.min_level=3",
            "model.maskconver.max_level=5",
            "model.decoder.max_level=5",
            "model.maskconver.targets.level_low=[0,1,2]",
            "model.maskconver.targets.level_high=[1,2,3]",
            *SMALL_HEADS,
        ],
        (97, 129),
    ),
    "mobilenetv3_large+aspp": ("tiny", ["model.backbone.name=mobilenetv3_large"], (65, 63)),
}
SLOW_CASES: dict[str, tuple[str, list[str], tuple[int, int]]] = {
    "resnet50_unet_full_heads": (
        "resnet50_unet",
        ["model.num_classes=null", "model.backbone.unet_repeats=[1,1,1]", "model.num_proposals=30"],
        (128, 128),
    ),
    "resnet50+fpn": (
        "tiny",
        ["model.backbone.name=resnet50", "model.decoder.name=fpn", *SMALL_HEADS],
        (97, 65),
    ),
}
ALL_CASES = {**CASES, **SLOW_CASES}


@functools.cache
def case_model(name: str) -> MaskConver:
    preset, overrides, _ = ALL_CASES[name]
    torch.manual_seed(0)
    return build_model(load_config(preset, overrides).model, NUM_CLASSES)


def images_for(name: str) -> torch.Tensor:
    h, w = ALL_CASES[name][2]
    return torch.rand(BATCH, 3, h, w, generator=torch.Generator().manual_seed(1)) * 255


def teacher_slots(center_logits: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """GT slots hitting the last pixel of EVERY level (so each level's norms get gradients),
    plus a padding slot (class -1 at index 0)."""
    offsets, total = [], 0
    for x in center_logits:
        total += x.shape[-2] * x.shape[-1]
        offsets.append(total - 1)
    indices = torch.tensor(offsets + [0])
    classes = torch.tensor([i % NUM_CLASSES for i in range(len(offsets))] + [-1])
    return indices.repeat(BATCH, 1), classes.repeat(BATCH, 1)


@pytest.mark.parametrize(
    "name", [*CASES, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW_CASES)]
)
def test_contract(name: str) -> None:
    model = case_model(name)
    images = images_for(name)

    # eval: peaks, K = num_proposals, deterministic
    model.eval()
    with torch.no_grad():
        out = model(images)
        again = model(images)
    assert isinstance(out, MaskConverOutput)
    k = model.num_proposals
    assert out.scores.shape == out.classes.shape == out.center_indices.shape == (BATCH, k)
    assert all(x.shape[:2] == (BATCH, NUM_CLASSES) for x in out.center_logits)
    assert out.mask_logits.shape[:2] == (BATCH, k)
    # the mask-feature map the logits come from (what training-only heads read)
    assert out.pixel_embeddings is not None
    assert out.pixel_embeddings.shape[0] == BATCH
    assert out.pixel_embeddings.shape[-2:] == out.mask_logits.shape[-2:]
    assert out.semantic_logits is None
    for a, b in zip(out, again):
        if a is None:
            assert b is None
        elif isinstance(a, tuple):
            assert all(torch.equal(x, y) for x, y in zip(a, b))
        else:
            assert torch.equal(a, b)

    # train: teacher forcing, same type and level shapes
    model.train()
    model.zero_grad(set_to_none=True)
    indices, classes = teacher_slots(out.center_logits)
    tout = model(images, indices, classes)
    assert isinstance(tout, MaskConverOutput)
    assert [x.shape for x in tout.center_logits] == [x.shape for x in out.center_logits]
    assert tout.mask_logits.shape == (BATCH, indices.shape[1], *out.mask_logits.shape[-2:])
    assert tout.classes[:, -1].tolist() == [0] * BATCH  # padding class clamped
    assert torch.equal(tout.center_indices, indices)
    for t in (*tout.center_logits, tout.mask_logits, tout.scores):
        assert torch.isfinite(t).all()
    # teacher-forced score = sigmoid(logit) at (index, class); slot 0 sits on level 0's last pixel
    lv0 = tout.center_logits[0]
    last = lv0[:, int(classes[0, 0])].flatten(1)[:, -1]
    torch.testing.assert_close(tout.scores[:, 0], last.sigmoid())

    loss = sum(x.sum() for x in tout.center_logits) + tout.mask_logits.sum() + tout.scores.sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:10]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:10]}"


def test_single_scale_mask_resolution_is_the_center_level_by_default() -> None:
    out = case_model("tiny+stride8_masks").eval()(images_for("tiny+stride8_masks"))
    # at 129x97 without model.maskconver.mask_level: both at stride 8,
    # ceil(129 / 8) x ceil(97 / 8) = 17 x 13
    assert out.mask_logits.shape[-2:] == (17, 13)
    assert [x.shape[-2:] for x in out.center_logits] == [(17, 13)]


@pytest.mark.parametrize("name", ["tiny", "tiny+fpn"])
def test_mask_level_puts_masks_finer_than_centers(name: str) -> None:
    out = case_model(name).eval()(images_for(name))
    # the tiny preset at 129x97: centers at stride 8 -> ceil(129 / 8) x ceil(97 / 8) = 17 x 13;
    # mask features at model.maskconver.mask_level 2 (stride 4) ->
    # ceil(129 / 4) x ceil(97 / 4) = 33 x 25
    # (with an FPN the pyramid reaches down to the mask level although decoder.min_level is 3)
    assert [x.shape[-2:] for x in out.center_logits] == [(17, 13)]
    assert out.mask_logits.shape[-2:] == (33, 25)
    assert out.pixel_embeddings is not None and out.pixel_embeddings.shape[-2:] == (33, 25)


def test_multiscale_levels_and_stride_4_masks() -> None:
    out = case_model("tiny+maskconver_fpn+multiscale").eval()(
        images_for("tiny+maskconver_fpn+multiscale")
    )
    # levels 3..7 of a 129x97 input: 17x13, 9x7, 5x4, 3x2, 2x1; masks at stride 4: 33x25
    assert [tuple(x.shape[-2:]) for x in out.center_logits] == [
        (17, 13),
        (9, 7),
        (5, 4),
        (3, 2),
        (2, 1),
    ]
    assert out.mask_logits.shape[-2:] == (33, 25)


def test_bad_inputs_are_named() -> None:
    model = case_model("tiny").eval()
    images = torch.zeros(1, 3, 64, 64)  # heatmap 8x8 = 64 positions
    with pytest.raises(ValueError, match="images must be \\[B, 3, H, W\\]"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="together"):
        model(images, torch.zeros(1, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="center_indices must be in \\[0, 64\\)"):
        model(images, torch.tensor([[64]]), torch.tensor([[0]]))
    with pytest.raises(ValueError, match="classes must be < num_classes=7"):
        model(images, torch.tensor([[3]]), torch.tensor([[7]]))
    with pytest.raises(ValueError, match="both be \\[B, K\\]"):
        model(images, torch.tensor([[3, 4]]), torch.tensor([[1]]))


def test_hard_sigmoid_flag_scores() -> None:
    model = case_model("tiny").eval()
    model.hard_sigmoid = True
    try:
        out = model(torch.zeros(1, 3, 64, 64), torch.tensor([[5]]), torch.tensor([[2]]))
        logit = out.center_logits[0][0, 2].flatten()[5]
        torch.testing.assert_close(out.scores[0, 0], torch.clamp(logit + 3, 0, 6) / 6)
    finally:
        model.hard_sigmoid = False
