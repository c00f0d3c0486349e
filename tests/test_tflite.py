"""TFLite export (``--format tflite``) and its LiteRT backend, against eager torch.

* The op that TFLite could not run (ASPP image pooling's ``expand``: BROADCAST_TO) is now a
  nearest resize of the 1x1 map; it gives exactly the old values and gradients (no extra needed).
* On the widened random weights of ``test_export_eager_parity`` (distinct scores and masks), the
  fp32 ``.tflite`` run by ``ai-edge-litert`` gives torch's raw outputs up to float rounding and
  the same panoptic segments (the merge is the post-processor's eager call on its outputs).
* On a briefly trained tiny model (the ONNX tests' recipe): ``Predictor.from_tflite`` against the
  checkpoint, weight-only int8 against fp32, and the CLI round trip (export, predict, evaluate).
* A damaged or foreign ``.tflite`` is an ``ExportError`` naming the file; the CLI says it in one
  line with exit code 2.

The conversions share module fixtures (litert-torch takes about 15-30 s per model here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from maskconver.decoders.aspp import ASPP

# weight-only int8 rounds each weight to 1/254 of its output channel's range (per-channel
# symmetric). Measured against the fp32 .tflite, widened random tiny model (3 images): heatmap
# logits 2e-5 relative RMS, scores within 2e-5, 92-100 % of the peaks the same, their mask logits
# 1.5-2.3 % relative RMS; the bounds leave 2-5x room.
INT8_HEATMAP_RMS = 1e-3
INT8_SCORE_ATOL = 1e-4
INT8_SAME_PEAKS = 0.75
INT8_MASK_RMS = 0.05
# trained tiny model, 8 validation scenes: per-pixel category agreement 0.99-1.0 on 7 images; on
# one a 1105-pixel person segment is dropped (its pixels join a neighbour): 0.9. Every image
# >= 0.85 and the mean >= 0.97; the same segment classes on >= 6 of 8 images.
INT8_CATEGORY_AGREEMENT = 0.85
INT8_MEAN_CATEGORY_AGREEMENT = 0.97
TFLITE_AGREEMENT = 0.999  # fp32 LiteRT vs eager torch: float rounding only (as onnxruntime)
AREA_SLACK = 0.001
RAW_ATOL = 1e-4  # measured max |diff| 1.1e-5 on mask logits of the widened tiny model
# litert-torch's exporter uses a deprecated torch pytree check
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")


def _needs_litert() -> None:
    pytest.importorskip("litert_torch", reason="TFLite export needs the [tflite] extra")
    pytest.importorskip("ai_edge_litert", reason="the TFLite backend needs the [tflite] extra")


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_image_pooling_tiling_equals_the_old_expand(train: bool) -> None:
    """The nearest resize of the pooled map gives expand()'s values and gradients exactly."""
    torch.manual_seed(0)
    aspp = ASPP(
        16,
        channels=8,
        dilation_rates=(1, 2),
        norm_layer=lambda c: torch.nn.BatchNorm2d(c),
        act_layer=torch.nn.ReLU,
    )
    pooling: Any = aspp.branches[-1]
    pooling.train(train)
    if not train:  # non-trivial running statistics
        pooling.norm.running_mean.uniform_(-0.5, 0.5)
        pooling.norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 16, 5, 7, requires_grad=True)
    new = pooling(x)
    pooled = pooling.conv(x.mean(dim=(2, 3), keepdim=True))
    expanded = pooled.expand(-1, -1, *x.shape[-2:])  # the formulation before the TFLite fix
    tiled = torch.nn.functional.interpolate(pooled, size=x.shape[-2:], mode="nearest")
    assert torch.equal(tiled, expanded)  # the op itself: exactly the same tensor
    assert new.shape == (2, 8, 5, 7)
    assert torch.equal(new, pooling.act(pooling.norm(expanded.contiguous())))
    # the old code fed batch norm a stride-0 view, whose eval kernel rounds by an ulp or two
    old = pooling.act(pooling.norm(expanded))
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-7)
    weights = torch.randn_like(new)
    (grad_new,) = torch.autograd.grad((new * weights).sum(), x)
    (grad_old,) = torch.autograd.grad((old * weights).sum(), x)
    # the backward of a nearest resize sums the 35 copies in another order than expand's: the
    # two sums differ by up to 34 roundings (2**-24 relative) of the copies' total size, carried
    # through the 1 x 1 conv and the mean to x (4.4e-6 measured on an AMD EPYC); 2x for the rest
    copies = tiled.detach().requires_grad_()
    (upstream,) = torch.autograd.grad((pooling.act(pooling.norm(copies)) * weights).sum(), copies)
    sums = 34 * 2.0**-24 * upstream.abs().sum(dim=(2, 3))  # [2, 8]
    conv = pooling.conv.weight.detach().abs()[:, :, 0, 0]  # [8, 16]
    bound = 2 * float((sums @ conv).max()) / (x.shape[2] * x.shape[3])
    torch.testing.assert_close(grad_new, grad_old, rtol=0, atol=bound)


@pytest.fixture(scope="module")
def random_export(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The widened random tiny MaskConver of the parity tests as a checkpoint, exported at 96x96
    (fp32) by the CLI, and a weight-only int8 copy."""
    _needs_litert()
    from test_export_eager_parity import _setup

    from maskconver.cli import main
    from maskconver.engine.checkpoint import save_checkpoint
    from maskconver.export.tflite import quantize_tflite_file

    cfg, categories, num_classes, model, post, samples = _setup("maskconver")
    tmp = tmp_path_factory.mktemp("tflite_random")
    checkpoint = save_checkpoint(
        tmp / "checkpoints",
        model=model,
        ema=None,
        optimizer=None,
        step=0,
        config=cfg,
        categories=categories,
        num_classes=num_classes,
    )
    path = tmp / "tiny.tflite"
    args = ["export", "--checkpoint", str(checkpoint), "--output", str(path), "--format", "tflite"]
    assert main(args) == 0
    int8 = tmp / "tiny_int8.tflite"
    quantize_tflite_file(path, int8, mode="weight_only")
    return model, post, samples, path, checkpoint, int8


def test_raw_outputs_match_torch(random_export: tuple) -> None:
    from maskconver.export.tflite import NetworkGraph, TfLitePanopticModel, read_tflite_metadata

    model, _, samples, path, *_ = random_export
    meta, fields = read_tflite_metadata(path)
    assert meta.quantization == "none" and meta.input_size == (96, 96)
    assert ("pixel_embeddings", -1) in fields  # training-only: not an output
    backend = TfLitePanopticModel(path, threads=1)
    graph = NetworkGraph(model).eval()
    for sample in samples:
        image = np.ascontiguousarray(sample.image)
        lite = backend.raw(image)
        with torch.no_grad():
            eager = graph(torch.from_numpy(image)[None])
        assert sorted(lite) == sorted(eager) == sorted(meta.outputs)
        for name, value in eager.items():
            if value.dtype.is_floating_point:
                np.testing.assert_allclose(lite[name], value.numpy(), atol=RAW_ATOL, err_msg=name)
            else:  # LiteRT downcasts int64 outputs to int32
                np.testing.assert_array_equal(lite[name].astype(np.int64), value.numpy(), name)


def test_panoptic_parity_with_eager_torch(random_export: tuple) -> None:
    from maskconver.export.tflite import TfLitePanopticModel
    from maskconver.inference import predict_samples

    model, post, samples, path, *_ = random_export
    backend = TfLitePanopticModel(path, threads=1)
    segments = 0
    for sample in samples:
        (eager,) = predict_samples(model, post, [sample])
        (lite,) = predict_samples(backend, post, [sample])
        assert lite.panoptic.shape == eager.panoptic.shape
        assert float((lite.panoptic == eager.panoptic).mean()) >= TFLITE_AGREEMENT
        key = [(s.id, s.category_id, s.isthing) for s in lite.segments]
        assert key == [(s.id, s.category_id, s.isthing) for s in eager.segments]
        for a, b in zip(lite.segments, eager.segments, strict=True):
            assert abs(a.area - b.area) <= max(1, AREA_SLACK * b.area)
        segments += len(eager.segments)
    assert segments >= 3 * len(samples)  # the merge really ran


def test_no_op_tflite_refuses(random_export: tuple) -> None:
    """The converted graph has none of the ops LiteRT refused (BROADCAST_TO)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(random_export[3])
    names = {
        flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        for op in model.subgraphs[0].operators
    }
    assert "BROADCAST_TO" not in names and "CONV_2D" in names


def test_weight_only_int8_agrees_with_fp32(random_export: tuple) -> None:
    """Raw outputs: the heatmaps (scores, peaks) nearly exact, mask logits within a few %."""
    from maskconver.export.tflite import TfLitePanopticModel, read_tflite_metadata

    _, _, samples, fp32, _, int8 = random_export
    meta, _ = read_tflite_metadata(int8)
    assert meta.quantization == "weight_only"
    assert meta.outputs == read_tflite_metadata(fp32)[0].outputs
    # int8 weights: the file shrinks towards a quarter (biases, norms and metadata stay float)
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    float_model = TfLitePanopticModel(fp32, threads=1)
    int8_model = TfLitePanopticModel(int8, threads=1)
    for sample in samples:
        a, b = int8_model.raw(sample.image), float_model.raw(sample.image)
        assert _relative_rms(a["center_logits.0"], b["center_logits.0"]) < INT8_HEATMAP_RMS
        np.testing.assert_allclose(a["scores"], b["scores"], atol=INT8_SCORE_ATOL)
        same = a["center_indices"][0] == b["center_indices"][0]  # the same peaks
        assert same.mean() >= INT8_SAME_PEAKS
        masks = a["mask_logits"][0][same], b["mask_logits"][0][same]
        assert _relative_rms(*masks) < INT8_MASK_RMS


def _relative_rms(a: np.ndarray, b: np.ndarray) -> float:
    """RMS of ``a - b`` over the RMS of ``b``."""
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b.astype(np.float64) ** 2)))


def _images(n: int) -> list[np.ndarray]:
    from maskconver.data.synthetic import VAL_STREAM, SyntheticPanoptic

    scenes = SyntheticPanoptic(n, seed=5, min_size=80, max_size=120, stream=VAL_STREAM)
    return [scenes[i].image for i in range(n)]


def test_cli_export_predict_and_evaluate(random_export: tuple, tmp_path: Path) -> None:
    from maskconver.cli import main
    from maskconver.data.synthetic import write_synthetic_dataset

    _, _, _, fp32, checkpoint, _ = random_export
    export = ["export", "--checkpoint", str(checkpoint), "--format", "tflite"]
    assert main([*export, "--output", str(fp32)]) == 2  # exists
    assert main([*export, "--output", str(tmp_path / "m.onnx")]) == 2  # suffix
    assert main([*export, "--output", str(tmp_path / "d.tflite"), "--dynamic"]) == 2
    assert main([*export, "--output", str(tmp_path / "s.tflite"), "--int8", "static"]) == 2
    onnx_weight_only = ["--output", str(tmp_path / "w.onnx"), "--int8", "weight-only"]
    assert main(["export", "--checkpoint", str(checkpoint), *onnx_weight_only]) == 2
    root = tmp_path / "data"
    write_synthetic_dataset(root, train=0, val=4, seed=3, min_size=80, max_size=120, progress=False)
    out = tmp_path / "l.json"
    common = ["--data-root", str(root), "--threads", "1"]
    assert main(["evaluate", "--model", str(fp32), *common, "--output", str(out)]) == 0
    assert 0.0 <= json.loads(out.read_text())["all"]["pq"] <= 1.0
    pred = tmp_path / "pred"
    args = ["predict", "--model", str(fp32), "--input", str(root / "val2017"), "--output"]
    assert main([*args, str(pred), "--threads", "1"]) == 0
    assert (pred / "predictions.json").is_file()
    assert len(json.loads((pred / "predictions.json").read_text())["annotations"]) == 4


def test_a_damaged_or_foreign_tflite_is_refused(
    random_export: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ai_edge_litert.tools import flatbuffer_utils
    from PIL import Image

    from maskconver.cli import main
    from maskconver.export.graph import ExportError
    from maskconver.export.tflite import TfLitePanopticModel

    fp32 = random_export[3]
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64 + b"not a flatbuffer")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(fp32.read_bytes()[:4096])
    foreign = tmp_path / "foreign.tflite"  # a valid TFLite model without maskconver metadata
    model = flatbuffer_utils.read_model(fp32)
    model.metadata = [m for m in model.metadata if m.name not in (b"maskconver", "maskconver")]
    flatbuffer_utils.write_model(model, foreign)
    expected = {
        garbage: "is not a TFLite file",
        truncated: "is not a readable maskconver TFLite file",
        foreign: "is not a maskconver export",
        tmp_path / "missing.tflite": "TFLite model not found",
    }
    for path, message in expected.items():
        with pytest.raises(ExportError, match=message) as info:
            TfLitePanopticModel(path)
        assert str(path) in str(info.value)
    image = tmp_path / "photo.png"
    Image.fromarray(_images(1)[0]).save(image)
    capsys.readouterr()
    args = ["predict", "--model", str(truncated), "--input", str(image), "--output"]
    assert main([*args, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated.tflite" in err[0], err


# --- trained weights (slow: a 150-step training, ~40 s, and one more conversion) ---


@pytest.fixture(scope="module")
def trained_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A briefly trained tiny checkpoint, its fp32 .tflite and a weight-only int8 copy."""
    _needs_litert()
    from test_export import _train

    from maskconver.export.tflite import export_tflite, quantize_tflite_file

    tmp = tmp_path_factory.mktemp("tflite_trained")
    checkpoint = _train(tmp / "run", [])
    fp32, int8 = tmp / "m.tflite", tmp / "m_int8.tflite"
    export_tflite(checkpoint, fp32)
    quantize_tflite_file(fp32, int8, mode="weight_only")
    return checkpoint, fp32, int8


def _agreement(a: Any, b: Any, images: list[np.ndarray]) -> tuple[float, int]:
    """Minimum pixel agreement and the number of images with the same segment classes."""
    worst, same = 1.0, 0
    for image in images:
        pa, pb = a(image), b(image)
        worst = min(worst, float((pa.panoptic == pb.panoptic).mean()))
        key = sorted((s.category_id, s.isthing) for s in pa.segments)
        same += key == sorted((s.category_id, s.isthing) for s in pb.segments)
    return worst, same


@pytest.mark.slow
def test_trained_tflite_matches_the_checkpoint_and_int8_agrees(trained_export: tuple) -> None:
    from maskconver.engine.checkpoint import load_checkpoint
    from maskconver.export.tflite import read_tflite_metadata
    from maskconver.predictor import Predictor

    checkpoint, fp32, int8 = trained_export
    meta, _ = read_tflite_metadata(fp32)
    loaded = load_checkpoint(checkpoint)
    assert meta.config == loaded.config and meta.num_classes == loaded.num_classes
    assert [c.id for c in meta.categories.categories] == [
        c.id for c in loaded.categories.categories
    ]
    assert oct(fp32.stat().st_mode & 0o777) != "0o600"  # normal permissions, not mkstemp's
    images = _images(8)
    lite = Predictor.from_tflite(fp32, threads=1)
    worst, same = _agreement(lite, Predictor.from_checkpoint(checkpoint), images)
    assert worst >= TFLITE_AGREEMENT and same == len(images), (worst, same)
    agreement, same = _category_agreement(Predictor.from_tflite(int8, threads=1), lite, images)
    assert min(agreement) >= INT8_CATEGORY_AGREEMENT, agreement
    assert float(np.mean(agreement)) >= INT8_MEAN_CATEGORY_AGREEMENT, agreement
    assert same >= len(images) - 2, same


def _category_agreement(a: Any, b: Any, images: list[np.ndarray]) -> tuple[list[float], int]:
    """Per image, the fraction of pixels of the same category (void: -1; segment ids renumber
    when a segment drops out), and the number of images with the same segment classes."""
    fractions, same = [], 0
    for image in images:
        results = a(image), b(image)
        maps = []
        for result in results:
            lookup = np.full(int(result.panoptic.max()) + 1, -1)
            for segment in result.segments:
                lookup[segment.id] = segment.category_id
            maps.append(lookup[result.panoptic])
        fractions.append(float((maps[0] == maps[1]).mean()))
        classes = [sorted(s.category_id for s in r.segments) for r in results]
        same += classes[0] == classes[1]
    return fractions, same


@pytest.mark.slow
def test_trained_tflite_evaluates_like_the_checkpoint(
    trained_export: tuple, tmp_path: Path
) -> None:
    from maskconver.cli import main
    from maskconver.data.synthetic import write_synthetic_dataset

    checkpoint, fp32, _ = trained_export
    root = tmp_path / "data"
    write_synthetic_dataset(root, train=0, val=6, seed=3, min_size=80, max_size=120, progress=False)
    out_t, out_l = tmp_path / "t.json", tmp_path / "l.json"
    common = ["--data-root", str(root), "--threads", "1"]
    assert main(["evaluate", "--checkpoint", str(checkpoint), *common, "--output", str(out_t)]) == 0
    assert main(["evaluate", "--model", str(fp32), *common, "--output", str(out_l)]) == 0
    pq_t = json.loads(out_t.read_text())["all"]["pq"]
    pq_l = json.loads(out_l.read_text())["all"]["pq"]
    assert abs(pq_t - pq_l) <= 1e-3, (pq_t, pq_l)
