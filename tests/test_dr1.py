"""DR1Conv, aligned upsampling, the DR1Basis / BiFPN / ConvNeXt-UNet decoders.

The contract over every backbone (shapes at sizes that are not multiples of 32, gradients to
every parameter) runs in ``test_build_tables.py``; here are the layer identities.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskconver.decoders import BiFPN, ConvNeXtUNet, DR1Basis
from maskconver.layers.dr1conv import DR1Conv, DR1FactorGenerator, activate_factor
from maskconver.layers.resample import aligned_upsample, crop_to, upsample_to

BN = nn.BatchNorm2d


def test_dr1conv_k1_is_the_rank1_modulated_conv_at_every_pixel() -> None:
    torch.manual_seed(0)
    layer = DR1Conv(5, 3, kernel_size=1)
    x = torch.randn(2, 5, 4, 6)
    a_raw, b_raw = torch.randn(2, 5, 4, 6), torch.randn(2, 3, 4, 6)
    y = layer(x, a_raw, b_raw)
    w = layer.conv.weight[:, :, 0, 0]  # [C_out, C_in]
    a, b = 1 + a_raw, 1 + b_raw  # one_plus
    for n in range(2):
        for i in range(4):
            for j in range(6):
                dynamic = w * torch.outer(b[n, :, i, j], a[n, :, i, j])  # W * b a^T
                torch.testing.assert_close(y[n, :, i, j], dynamic @ x[n, :, i, j])


def test_factor_parametrisations_and_zero_init_identity() -> None:
    raw = torch.tensor([-1.0, 0.0, 2.0])
    torch.testing.assert_close(activate_factor(raw, "one_plus"), torch.tensor([0.0, 1.0, 3.0]))
    torch.testing.assert_close(activate_factor(raw, "two_sigmoid"), 2 * raw.sigmoid())
    torch.manual_seed(0)
    layer = DR1Conv(4, 4, 3)
    gen = DR1FactorGenerator(6, 4, 4, factors="both")
    x, context = torch.randn(1, 4, 5, 5), torch.randn(1, 6, 5, 5)
    a_raw, b_raw = gen(context)
    assert a_raw is not None and b_raw is not None
    assert float(a_raw.detach().abs().max()) == 0.0  # zero-initialised generator
    torch.testing.assert_close(layer(x, a_raw, b_raw), layer.conv(x))  # starts as the plain conv
    only_in = DR1FactorGenerator(6, 4, 4, factors="in")
    assert only_in(context)[1] is None and only_in.conv.out_channels == 4


def test_aligned_upsample_lines_up_with_a_strided_conv_on_odd_sizes() -> None:
    # a linear pattern f(y, x) = y + 10 x on a 9 x 7 grid
    ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(7.0), indexing="ij")
    fine = (ys + 10 * xs)[None, None]
    # a 3x3 stride-2 conv (padding 1) with the centre tap only: coarse j sits over fine 2j
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
    coarse = conv(fine)
    assert coarse.shape[-2:] == (5, 4)
    # the aligned x2 (cropped to the fine level) reproduces the linear pattern exactly
    up = upsample_to(coarse, fine.shape[-2:])
    torch.testing.assert_close(up, fine)
    # a naive half-pixel resize is off by about half a coarse pixel
    naive = upsample_to(coarse, fine.shape[-2:], aligned=False)
    assert float((naive - fine).abs().max()) > 1.0
    # x factor: coarse pixel j lands on fine pixel factor * j
    x = torch.arange(3.0)[None, None, None]
    assert aligned_upsample(x, 4)[0, 0, 0].tolist() == [
        0,
        0.25,
        0.5,
        0.75,
        1,
        1.25,
        1.5,
        1.75,
        2,
        2,
        2,
        2,
    ]
    with pytest.raises(ValueError, match="smaller"):
        crop_to(x, (1, 5))


CHANNELS, STRIDES = (8, 16, 24, 32), (4, 8, 16, 32)


def _features(h: int, w: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(2, c, -(-h // s), -(-w // s), generator=g)
        for c, s in zip(CHANNELS, STRIDES, strict=True)
    ]


def _dr1(**kw: object) -> DR1Basis:
    torch.manual_seed(0)
    args: dict[str, object] = {"channels": 16, "width": 8, "min_level": 3, "max_level": 6}
    args.update(kw)
    return DR1Basis(CHANNELS, STRIDES, norm_layer=BN, act_layer=nn.ReLU, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("h", "w"), [(65, 97), (100, 36), (128, 128)])
def test_dr1basis_outputs_and_roles(h: int, w: int) -> None:
    dec = _dr1(head_levels=[3]).eval()
    outs = dec(_features(h, w))
    assert len(outs) == len(dec.channels) == len(dec.strides)
    assert outs[0].shape == (2, 8, -(-h // 4), -(-w // 4))  # F at stride 4
    assert dec.roles == {"pixel": (0,), "center": (1,), "embedding": (5,)}
    assert outs[1].shape[-2:] == (-(-h // 8), -(-w // 8))
    for out, c in zip(outs, dec.channels, strict=True):
        assert out.shape[1] == c


def test_dr1basis_factors_start_as_the_plain_merge() -> None:
    plain = _dr1(factor_source="none").eval()
    dynamic = _dr1(factor_source="embedding_tower").eval()
    missing, unexpected = dynamic.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith("generator.") for k in missing) and not unexpected
    feats = _features(65, 97)
    with torch.no_grad():
        for a, b in zip(plain(feats), dynamic(feats), strict=True):
            torch.testing.assert_close(a, b)
    # and they can move away from it: a non-zero generator changes F only
    with torch.no_grad():
        assert dynamic.generator is not None
        dynamic.generator.conv.weight.normal_(std=0.1)
        moved = dynamic(feats)
    assert not torch.allclose(moved[0], plain(feats)[0])


def test_dr1basis_sources_and_controls() -> None:
    assert _dr1(factor_source="none").generator is None
    local = _dr1(factor_source="local")
    assert local.generator is not None and local.generator.conv.in_channels == 8  # reads D
    tower = _dr1(factor_source="embedding_tower")
    assert tower.generator is not None and tower.generator.conv.in_channels == 16
    concat = _dr1(factor_source="none", fusion="concat")
    assert [m.conv.in_channels for m in concat.merge_convs] == [16, 16, 16, 8]
    with pytest.raises(ValueError, match="factor-free\) control"):
        _dr1(fusion="concat")
    # the tower runs only where a head reads it unless it also makes the factors
    assert len(_dr1(factor_source="local", head_levels=[3]).tower_norms) == 1
    assert len(_dr1(factor_source="embedding_tower", head_levels=[3]).tower_norms) == 4


def test_bifpn_fast_normalised_fusion_and_shapes() -> None:
    torch.manual_seed(0)
    dec = BiFPN(
        CHANNELS,
        STRIDES,
        channels=8,
        min_level=3,
        max_level=6,
        num_repeats=2,
        norm_layer=BN,
        act_layer=nn.SiLU,
    ).eval()
    outs = dec(_features(65, 97))
    assert [o.shape[-2:] for o in outs] == [(9, 13), (5, 7), (3, 4), (2, 2)]
    assert dec.strides == (8, 16, 32, 64)
    fusion = dec.layers[0].top_down[0]
    with torch.no_grad():
        fusion.weights.copy_(torch.tensor([3.0, -1.0]))  # relu -> (3, 0): only the first input
    x, y = torch.ones(1, 8, 2, 2), torch.full((1, 8, 2, 2), 5.0)
    expected = fusion.norm(fusion.conv(fusion.act(3.0 * x / (3.0 + 1e-4))))
    torch.testing.assert_close(fusion([x, y]), expected)
    single = BiFPN(
        CHANNELS,
        STRIDES,
        channels=8,
        min_level=3,
        max_level=6,
        num_outputs=1,
        norm_layer=BN,
        act_layer=nn.SiLU,
    )
    assert len(single.layers[-1].bottom_up) == 0 and single.channels == (8,)


def test_convnext_unet_decoder_levels() -> None:
    dec = ConvNeXtUNet(
        CHANNELS, STRIDES, channels=8, min_level=3, max_level=6, repeats=[2, 1], act_layer=nn.GELU
    ).eval()
    outs = dec(_features(65, 97))
    assert [o.shape[1:] for o in outs] == [(8, 9, 13), (8, 5, 7), (8, 3, 4), (8, 2, 2)]
    assert [len(level.blocks) for level in dec.levels] == [2, 1, 1]  # padded with the last


def test_eval_padding_divisibility_and_mixed_size_batches() -> None:
    import numpy as np

    from maskconver.data.transforms import IMAGE_PAD_COLOR, ResizePad
    from maskconver.data.types import PanopticSample
    from maskconver.inference import images_to_tensor

    def sample(h: int, w: int) -> PanopticSample:
        return PanopticSample(
            image=np.full((h, w, 3), 7, np.uint8), panoptic=np.zeros((h, w), np.int32), segments=[]
        )

    # longest side 128: 96 x 160 -> 77 x 128 (round(96 * 0.8) = 77)
    assert ResizePad(128)(sample(96, 160)).image.shape[:2] == (128, 128)
    four = ResizePad(128, divisibility=4)(sample(96, 160))
    assert four.image.shape[:2] == (80, 128) and four.meta["valid_size"] == (77, 128)
    assert ResizePad(128, divisibility=32)(sample(96, 160)).image.shape[:2] == (96, 128)
    # a batch of two sizes is padded at the bottom/right with the same mean colour
    tall = ResizePad(128, divisibility=4)(sample(160, 90))  # 128 x 72
    batch = images_to_tensor([four.image, tall.image])
    assert batch.shape == (2, 3, 128, 128)
    assert batch[0, :, :77, :].eq(7).all() and batch[1, :, :, :72].eq(7).all()
    assert batch[0, 0, 100, 0].item() == IMAGE_PAD_COLOR[0]
    assert batch[1, 2, 0, 100].item() == IMAGE_PAD_COLOR[2]
