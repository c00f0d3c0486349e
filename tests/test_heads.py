"""Fusions, LightHead and MaskEmbeddingGenerator: shapes, structure, init, hand-derived values."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from maskconver.layers.norm import LayerNorm2d
from maskconver.meta.maskconver.heads import (
    LightHead,
    MaskEmbeddingGenerator,
    PyramidFusion,
    SelectLevels,
    SumToMerge,
)

BN = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


# ----------------------------------------------------------------------------------------------
# fusions


def test_sum_to_merge_adds_upsampled_decoder_to_projected_low_level() -> None:
    # identity projection (conv = I, no norm/act) makes the output backbone[low] + resize(decoder)
    fusion = SumToMerge(
        4,
        low_index=1,
        high_index=0,
        channels=4,
        norm_layer=lambda c: nn.Identity(),
        act_layer=nn.Identity,
    )
    with torch.no_grad():
        fusion.project[0].weight.copy_(torch.eye(4).view(4, 4, 1, 1))
    low = torch.randn(2, 4, 9, 7)
    backbone = [torch.randn(2, 3, 18, 14), low, torch.randn(2, 8, 5, 4)]
    decoder = [torch.full((2, 4, 5, 4), 3.0)]  # constant map: any bilinear resize keeps 3.0
    (out,) = fusion(backbone, decoder)
    assert out.shape == (2, 4, 9, 7)
    torch.testing.assert_close(out, low + 3.0)


def test_sum_to_merge_channel_mismatch_and_bad_index_are_named() -> None:
    fusion = SumToMerge(4, low_index=0, high_index=0, channels=8, norm_layer=BN, act_layer=nn.ReLU)
    with pytest.raises(ValueError, match="decoder map has 6 channels, projection has 8"):
        fusion([torch.randn(1, 4, 8, 8)], [torch.randn(1, 6, 4, 4)])
    with pytest.raises(IndexError, match="SumToMerge decoder: index 0 out of range for 0"):
        fusion([torch.randn(1, 4, 8, 8)], [])


def test_pyramid_fusion_sums_every_level_at_target_size() -> None:
    backbone = [torch.zeros(1, 2, 17, 13), torch.zeros(1, 2, 9, 7)]
    decoder = [
        torch.full((1, 5, 9, 7), 1.0),
        torch.full((1, 5, 5, 4), 2.0),
        torch.full((1, 5, 1, 1), 4.0),
    ]
    (out,) = PyramidFusion(target_index=0)(backbone, decoder)
    assert out.shape == (1, 5, 17, 13)
    torch.testing.assert_close(out, torch.full_like(out, 7.0))


def test_select_levels_passes_through() -> None:
    decoder = [torch.randn(1, 2, 4, 4) for _ in range(3)]
    out = SelectLevels([2, 0])([], decoder)
    assert out[0] is decoder[2] and out[1] is decoder[0]
    with pytest.raises(ValueError, match="empty"):
        SelectLevels([])


# ----------------------------------------------------------------------------------------------
# LightHead


def head_params(in_ch: int, out_ch: int, ch: int, convs: int, k: int, levels: int) -> int:
    """Hand count: depthwise k*k*w, norm 2w, pointwise w*ch, norm 2ch per repetition (norms per
    level); classifier ch*out + out."""
    total, width = 0, in_ch
    for _ in range(convs):
        total += width * k * k + width * ch + levels * (2 * width + 2 * ch)
        width = ch
    return total + width * out_ch + out_ch


@pytest.mark.parametrize("levels", [1, 3])
def test_light_head_shapes_shared_convs_per_level_norms(levels: int) -> None:
    head = LightHead(
        6,
        5,
        channels=8,
        num_convs=2,
        kernel_size=7,
        num_levels=levels,
        norm_layer=BN,
        act_layer=nn.ReLU,
    )
    assert sum(p.numel() for p in head.parameters()) == head_params(6, 5, 8, 2, 7, levels)
    inputs = [torch.randn(2, 6, 9 - 2 * i, 7 - 2 * i) for i in range(levels)]
    outs = head(inputs)
    assert [o.shape for o in outs] == [(2, 5, 9 - 2 * i, 7 - 2 * i) for i in range(levels)]
    depthwise = head.convs[0]
    assert depthwise.groups == 6 and depthwise.bias is None and depthwise.kernel_size == (7, 7)
    with pytest.raises(ValueError, match=f"expected {levels} levels, got {levels + 1}"):
        head(inputs + [inputs[0]])


def test_light_head_dense_variant_and_bad_kernel() -> None:
    head = LightHead(
        6, 5, channels=8, num_convs=2, kernel_size=0, norm_layer=LayerNorm2d, act_layer=nn.GELU
    )
    # two dense 3x3 convs (no bias) + LN (2 * 8 each) + classifier 8*5+5
    assert sum(p.numel() for p in head.parameters()) == 6 * 8 * 9 + 8 * 8 * 9 + 2 * 16 + 45
    assert head([torch.randn(1, 6, 5, 5)])[0].shape == (1, 5, 5, 5)
    with pytest.raises(ValueError, match="kernel_size must be 0 or odd, got 4"):
        LightHead(6, 5, kernel_size=4, norm_layer=BN, act_layer=nn.ReLU)


def test_light_head_init() -> None:
    torch.manual_seed(0)
    head = LightHead(
        256,
        201,
        channels=256,
        num_convs=1,
        kernel_size=7,
        norm_layer=BN,
        act_layer=nn.ReLU,
        prior_prob=0.1,
    )
    # prior 0.1 -> bias -log(0.9 / 0.1) = -log 9 = -2.1972 (the reference's "-2.19")
    torch.testing.assert_close(head.classifier.bias, torch.full((201,), -math.log(9.0)))
    assert head.classifier.weight.std().item() == pytest.approx(0.01, rel=0.15)
    # He normal on the 1x1: std sqrt(2 / 256) = 0.0884
    assert head.convs[1].weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.05)
    plain = LightHead(8, 3, channels=8, num_convs=1, norm_layer=BN, act_layer=nn.ReLU)
    assert plain.classifier.bias.abs().sum() == 0


# ----------------------------------------------------------------------------------------------
# MaskEmbeddingGenerator


def naive(
    gen: MaskEmbeddingGenerator, centers: torch.Tensor, classes: torch.Tensor, pixels: torch.Tensor
) -> torch.Tensor:
    """Per-slot, per-pixel python loops over the same weights."""
    b_n, k_n, e_n = centers.shape
    _, _, h_n, w_n = pixels.shape
    out = torch.zeros(b_n, k_n, h_n, w_n)
    for b in range(b_n):
        for k in range(k_n):
            cls = max(int(classes[b, k]), 0)
            emb = gen.class_embedding.weight[cls]
            fused = centers[b, k] * emb if gen.fusion == "mul" else centers[b, k] + emb
            hidden = gen.mlp[0].weight @ fused + gen.mlp[0].bias
            hidden = (hidden - hidden.mean()) / torch.sqrt(hidden.var(unbiased=False) + 1e-6)
            hidden = hidden * gen.mlp[1].weight + gen.mlp[1].bias
            hidden = torch.relu(hidden)
            mask_emb = gen.mlp[3].weight @ hidden + gen.mlp[3].bias
            for y in range(h_n):
                for x in range(w_n):
                    out[b, k, y, x] = sum(mask_emb[e] * pixels[b, e, y, x] for e in range(e_n))
    return out


@pytest.mark.parametrize("fusion", ["mul", "add"])
def test_mask_embedding_matches_naive_loops_on_2x2(fusion: str) -> None:
    torch.manual_seed(1)
    gen = MaskEmbeddingGenerator(
        3,
        4,
        hidden_dim=6,
        fusion=fusion,
        act_layer=nn.ReLU,  # type: ignore[arg-type]
    )
    centers = torch.randn(2, 3, 4)
    classes = torch.tensor([[0, 2, -1], [1, 1, 2]])  # -1 (padding) uses class 0
    pixels = torch.randn(2, 4, 2, 2)
    with torch.no_grad():
        got = gen.mask_logits(gen(centers, classes), pixels)
        torch.testing.assert_close(got, naive(gen, centers, classes, pixels), rtol=1e-4, atol=1e-5)


def test_mask_logits_hand_values() -> None:
    # one proposal (1, 2); pixels e0 = [[1, 0], [0, 1]], e1 = [[0, 1], [2, 0]]
    # logit = 1*e0 + 2*e1 = [[1, 2], [4, 1]]  (no bias, no scale)
    pixels = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [2.0, 0.0]]]])
    got = MaskEmbeddingGenerator.mask_logits(torch.tensor([[[1.0, 2.0]]]), pixels)
    assert got.tolist() == [[[[1.0, 2.0], [4.0, 1.0]]]]


def test_mask_embedding_init_and_bad_fusion() -> None:
    gen = MaskEmbeddingGenerator(201, 256, hidden_dim=256, act_layer=nn.ReLU)
    assert gen.class_embedding is not None
    w = gen.class_embedding.weight
    assert w.abs().max() <= 0.05 and w.std().item() == pytest.approx(0.1 / math.sqrt(12), rel=0.05)
    # Glorot uniform limit sqrt(6 / (256 + 256)) -> std = limit / sqrt(3)
    assert gen.mlp[0].weight.std().item() == pytest.approx(
        math.sqrt(6 / 512) / math.sqrt(3), rel=0.05
    )
    assert gen.mlp[1].eps == 1e-6
    with pytest.raises(ValueError, match="fusion must be 'mul', 'add' or 'none', got 'cat'"):
        MaskEmbeddingGenerator(
            3,
            4,
            hidden_dim=4,
            fusion="cat",
            act_layer=nn.ReLU,  # type: ignore[arg-type]
        )
