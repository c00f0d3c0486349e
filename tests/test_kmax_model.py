"""kMaX-DeepLab's network parts and post-processing, on hand-built cases."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from maskconver import build
from maskconver.config import ConfigError, load_config
from maskconver.meta.kmax.pixel_decoder import AxialAttention, KMaXPixelDecoder
from maskconver.meta.kmax.postprocess import (
    KMaXPostProcessor,
    image_mask_probabilities,
    query_scores,
    valid_pixels,
)
from maskconver.meta.kmax.transformer import KMaXPredictor, KMeansCrossAttention

TINY = ["model.num_proposals=8"]


def test_kmeans_assignment_is_the_argmax_over_centres() -> None:
    # 3 centres, a 2 x 2 map: pixel (0,0) -> 2, (0,1) -> 0, (1,0) -> 1, (1,1): a tie 0/1 -> 0
    logits = torch.tensor(
        [
            [[0.0, 5.0], [1.0, 3.0]],
            [[1.0, 2.0], [4.0, 3.0]],
            [[9.0, -1.0], [0.0, -2.0]],
        ]
    )[None]
    onehot = KMeansCrossAttention.assignment(logits, (2, 2))
    expected = torch.zeros(1, 3, 4)
    for pixel, centre in enumerate([2, 0, 1, 0]):
        expected[0, centre, pixel] = 1.0
    torch.testing.assert_close(onehot, expected)


def test_kmeans_update_adds_the_sum_of_the_assigned_values() -> None:
    cross = KMeansCrossAttention(2, 2)
    cross.value = nn.Identity()  # type: ignore[assignment]  # values = the map itself
    cross.norm = nn.Identity()  # type: ignore[assignment]
    features = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]])[None]
    logits = torch.tensor([[[5.0, 0.0], [5.0, 0.0]], [[0.0, 5.0], [0.0, 5.0]]])[None]
    queries = torch.zeros(1, 2, 2)
    moved = cross(queries, features, logits)
    # centre 0 owns the left column (1 + 3, 10 + 30), centre 1 the right one (2 + 4, 20 + 40)
    torch.testing.assert_close(moved, torch.tensor([[[4.0, 40.0], [6.0, 60.0]]]))


def test_kmeans_assignment_resizes_the_mask_logits_to_the_map() -> None:
    logits = torch.zeros(1, 2, 8, 8)
    logits[0, 1, :, 4:] = 1.0  # centre 1 wins the right half
    onehot = KMeansCrossAttention.assignment(logits, (2, 2)).reshape(1, 2, 2, 2)
    assert onehot[0, 1, :, 1].eq(1).all() and onehot[0, 0, :, 0].eq(1).all()


def test_axial_attention_equals_attention_along_each_column_and_row() -> None:
    torch.manual_seed(0)
    layer = AxialAttention(8, 2, axis=2, span=3)
    x = torch.randn(1, 8, 5, 3)
    out = layer(x)
    q, k, v = layer.qkv(x).chunk(3, dim=1)  # [1, 8, H, W] each
    bias = torch.empty(2, 5, 5)
    for i in range(5):
        for j in range(5):  # offsets beyond +-2 share the end entries
            bias[:, i, j] = layer.bias[:, min(max(i - j, -2), 2) + 2]
    expected = torch.empty_like(out)
    for col in range(3):
        for head in range(2):
            sl = slice(4 * head, 4 * head + 4)
            qc, kc, vc = (t[0, sl, :, col].T for t in (q, k, v))  # [H, 4]
            att = (qc @ kc.T / math.sqrt(4) + bias[head]).softmax(-1)
            expected[0, sl, :, col] = (att @ vc).T
    torch.testing.assert_close(out, expected)
    width = AxialAttention(8, 2, axis=3, span=3)
    width.load_state_dict(layer.state_dict())
    # attention along the width of x is attention along the height of x transposed
    torch.testing.assert_close(
        width(x.transpose(2, 3)), layer(x).transpose(2, 3), rtol=1e-5, atol=1e-5
    )


def test_predictor_starts_with_void_probability_0_9_and_unit_norm_dot_products() -> None:
    predictor = KMaXPredictor(4, 3, num_classes=5).eval()
    with torch.no_grad():
        predictor.classifier.weight.zero_()
    class_logits, _ = predictor(torch.randn(1, 2, 4), torch.randn(1, 3, 2, 2))
    probs = class_logits.softmax(-1)
    torch.testing.assert_close(probs[..., -1], torch.full((1, 2), 0.9))
    torch.testing.assert_close(probs[..., :-1], torch.full((1, 2, 5), 0.02))


def test_pixel_decoder_stages_run_coarse_to_fine_at_the_backbone_strides() -> None:
    decoder = KMaXPixelDecoder(
        (8, 16, 32, 64),
        (4, 8, 16, 32),
        channels=[32, 16, 16, 8],
        num_blocks=[1, 2, 1, 0],
        axial_stages=1,
        num_heads=2,
        span=4,
        norm_layer=nn.BatchNorm2d,
        act_layer=nn.GELU,
    )
    feats = [torch.randn(2, c, 64 // s, 64 // s) for c, s in zip((8, 16, 32, 64), (4, 8, 16, 32))]
    outs = decoder(feats)
    assert decoder.strides == (32, 16, 8, 4)
    assert [tuple(o.shape) for o in outs] == [
        (2, 32, 2, 2),
        (2, 16, 4, 4),
        (2, 16, 8, 8),
        (2, 8, 16, 16),
    ]
    assert [len(b) for b in decoder.blocks] == [1, 2, 1, 0]


def test_model_output_is_the_same_type_in_train_and_eval_with_one_prediction_per_block() -> None:
    cfg = load_config("kmax_tiny", TINY)
    model = build.build_model(cfg.model, 5)
    images = torch.rand(2, 3, 64, 64) * 255
    train_out = model.train()(images)
    eval_out = model.eval()(images)
    assert type(train_out) is type(eval_out)
    assert len(eval_out.aux_mask_logits) == sum(cfg.model.kmax.transformer_blocks) == 3
    assert eval_out.class_logits.shape == (2, 8, 6)
    assert eval_out.mask_logits.shape == (2, 8, 16, 16)
    norms = eval_out.pixel_features.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert [f.shape[-1] for f in eval_out.stage_features] == [2, 4, 8]


def test_config_rejects_inconsistent_stage_lists() -> None:
    with pytest.raises(ConfigError, match="decoder_blocks"):
        load_config("kmax_tiny", ["model.kmax.decoder_blocks=[1,1]"])
    with pytest.raises(ConfigError, match="transformer_strides"):
        load_config("kmax_tiny", ["model.kmax.transformer_strides=[32,16]"])
    with pytest.raises(ConfigError, match="remask_stages"):
        load_config("kmax_tiny", ["model.kmax.loss.remask_stages=4"])
    cfg = load_config("kmax_tiny", ["model.kmax.transformer_strides=[32,16,2]"])
    with pytest.raises(ConfigError, match="stride 2"):
        build.build_model(cfg.model, 3)


# --------------------------------------------------------------------------------------------
# post-processing


def test_query_score_is_class_probability_times_mean_probability_over_won_pixels() -> None:
    # 2 queries, 1 x 3 mask: query 0 wins pixels 0 and 1 (probs 0.9, 0.7), query 1 pixel 2 (0.6)
    probs = torch.tensor([[[0.9, 0.7, 0.2]], [[0.1, 0.3, 0.6]]])
    class_logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    valid = torch.ones(1, 3, dtype=torch.bool)
    scores, classes = query_scores(class_logits, probs, valid)
    torch.testing.assert_close(scores, torch.tensor([0.5 * 0.8, 0.8 * 0.6]))
    assert classes.tolist() == [0, 1]
    # pixel 2 in the padding: query 1 wins nothing, its confidence (and score) is 0
    valid[0, 2] = False
    scores, _ = query_scores(class_logits, probs, valid)
    torch.testing.assert_close(scores, torch.tensor([0.4, 0.0]))


def test_valid_pixels_follow_the_top_left_input_pixel() -> None:
    probs = torch.zeros(1, 4, 4)  # a 16 x 16 input at stride 4, valid part 10 x 5
    valid = valid_pixels(probs, (16, 16), (10, 5))
    assert valid[:, 0].tolist() == [True, True, True, False]  # rows at 0, 4, 8 < 10
    assert valid[0].tolist() == [True, True, False, False]  # columns at 0, 4 < 5


def test_softmax_probabilities_sum_to_one_over_the_queries() -> None:
    logits = torch.randn(5, 3, 3)
    torch.testing.assert_close(image_mask_probabilities(logits, "softmax").sum(0), torch.ones(3, 3))
    torch.testing.assert_close(image_mask_probabilities(logits, "sigmoid"), logits.sigmoid())


def test_postprocessor_turns_two_confident_queries_into_two_segments() -> None:
    post = KMaXPostProcessor(
        class_to_category=[1, 2],
        is_thing_class=[True, False],
        object_threshold=0.3,
        overlap_threshold=0.5,
        mask_threshold=0.5,
    )
    big = 8.0
    mask = torch.full((3, 4, 4), -big)
    mask[0, :2] = big  # query 0: top half, a thing
    mask[1, 2:] = big  # query 1: bottom half, stuff
    classes = torch.full((3, 3), -big)
    classes[0, 0] = big
    classes[1, 1] = big
    classes[2, 2] = big  # query 2 says void: never a segment
    (pred,) = post(
        type("Out", (), {"class_logits": classes[None], "mask_logits": mask[None]})(),  # type: ignore[arg-type]
        [(16, 16)],
        [(16, 16)],
        (16, 16),
    )
    assert sorted((s.category_id, s.isthing, s.area) for s in pred.segments) == [
        (1, True, 128),
        (2, False, 128),
    ]


def test_remax_changes_nothing_at_inference(tmp_path: Path) -> None:
    """Same parameters, MACs, exported graph and predictions with and without ReMaX."""
    from maskconver.benchmarking.measure import count_macs
    from maskconver.data.synthetic import synthetic_categories

    remax = ["model.kmax.loss.remask_stages=2", "model.kmax.loss.reclass_eta=0.1"]
    cats = synthetic_categories()
    models, criteria, configs = {}, {}, {}
    plain = ["model.kmax.loss.remask_stages=0", "model.kmax.loss.reclass_eta=0"]
    for name, extra in (("plain", plain), ("remax", remax)):
        configs[name] = load_config("kmax_tiny", [*TINY, *extra])
        torch.manual_seed(0)
        models[name] = build.build_model(configs[name].model, cats.num_classes).eval()
        criteria[name] = build.build_criterion(configs[name], cats.num_classes)
    plain, relaxed = models["plain"].state_dict(), models["remax"].state_dict()
    assert plain.keys() == relaxed.keys()
    assert all(torch.equal(plain[k], relaxed[k]) for k in plain)
    assert count_macs(models["plain"], (64, 64)) == count_macs(models["remax"], (64, 64))
    # the ReMaX heads are training-only parameters of the criterion
    extra_heads = sum(p.numel() for p in criteria["remax"].parameters()) - sum(
        p.numel() for p in criteria["plain"].parameters()
    )
    assert extra_heads > 0
    onnx = pytest.importorskip("onnx", reason="the graph comparison needs the [onnx] extra")
    from maskconver.export.onnx import export_model

    graphs = {}
    for name, model in models.items():
        path = tmp_path / f"{name}.onnx"
        export_model(model, configs[name], cats, cats.num_classes, path, size=(64, 64))
        graphs[name] = onnx.load(str(path))
    weights = {
        k: {i.name: onnx.numpy_helper.to_array(i) for i in g.graph.initializer}
        for k, g in graphs.items()
    }
    assert weights["plain"].keys() == weights["remax"].keys()
    assert [n.op_type for n in graphs["plain"].graph.node] == [
        n.op_type for n in graphs["remax"].graph.node
    ]
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        a, b = models["plain"](images), models["remax"](images)
    assert torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.class_logits, b.class_logits)
