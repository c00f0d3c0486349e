"""OpenVINO: the IR of the exported graph against torch and onnxruntime, int8 through NNCF, files.

A short training (module fixture, as in ``test_export.py``) gives weights whose proposals are
distinct. The float IR runs in f32 (``INFERENCE_PRECISION_HINT``; OpenVINO's default on a CPU
with AMX or AVX-512 BF16 is bf16): its raw outputs match torch like onnxruntime's do and its
panoptic maps agree on at least 99.9 % of the pixels. The int8 IR (NNCF, the merge left in float)
is checked against the float IR: pixel agreement and PQ (thresholds measured, see
``INT8_AGREEMENT``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("openvino", reason="the OpenVINO tests need the [openvino] extra")
pytest.importorskip("onnxruntime", reason="the parity checks need onnxruntime (the dev extra)")

from test_export import TRAIN  # noqa: E402
from test_export_eager_parity import (  # noqa: E402
    ARCHITECTURES,
    ORT_AGREEMENT,
    ORT_AREA_SLACK,
    _setup,
)

from maskconver.data.synthetic import VAL_STREAM, SyntheticPanoptic  # noqa: E402
from maskconver.export.graph import ExportError  # noqa: E402
from maskconver.export.onnx import export_model, export_onnx, read_metadata  # noqa: E402
from maskconver.export.openvino import (  # noqa: E402
    OpenVinoPanopticModel,
    accuracy_check,
    convert_onnx,
    merge_ops,
    quantize_openvino,
    read_openvino_metadata,
)
from maskconver.postprocess.segments import PanopticPrediction  # noqa: E402
from maskconver.predictor import Predictor  # noqa: E402

# int8 vs the float IR on the 8 test images of the 150-step tiny model, per-pixel category (segment
# ids are renumbered when int8 reorders two close scores): 97.9 % on average (99.2-99.8 % on
# six images: mask borders move by a pixel; 92 % and 95 % on two where the barely trained
# classifier's square and disk scores are close and int8 flips one object's class). PQ on 32
# synthetic validation scenes, 32 calibration scenes: +0.13 (on 100: +0.05); with 8 calibration
# scenes -0.40 (100: -0.27). The bounds leave room for other CPUs.
INT8_AGREEMENT = 0.95
INT8_PQ_DROP = 0.5
CALIBRATION = 32  # the CLI's default count
PQ_IMAGES = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from maskconver.config import load_config
    from maskconver.engine.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train(
            load_config("tiny", TRAIN), tmp_path_factory.mktemp("ov_run"), progress=False
        )
    finally:
        torch.set_num_threads(threads)
    return Path(summary["checkpoint"])


@pytest.fixture(scope="module")
def exported(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The float ONNX, its IR and an int8 IR of the trained model."""
    from maskconver.commands.export import calibration_inputs

    folder = tmp_path_factory.mktemp("ov_files")
    paths = {"onnx": folder / "m.onnx", "xml": folder / "m.xml", "int8": folder / "m_int8.xml"}
    export_onnx(trained, paths["onnx"])
    convert_onnx(paths["onnx"], paths["xml"])
    feeds = calibration_inputs(paths["xml"], None, count=CALIBRATION)
    quantize_openvino(paths["xml"], paths["int8"], feeds)
    return paths


def _images(n: int = 8) -> list[np.ndarray]:
    scenes = SyntheticPanoptic(n, seed=5, min_size=80, max_size=120, stream=VAL_STREAM)
    return [scenes[i].image for i in range(n)]


def _agreement(a: Predictor, b: Predictor, images: list[np.ndarray]) -> tuple[float, int]:
    """Minimum pixel agreement and the number of images with identical segment lists."""
    worst, same = 1.0, 0
    for image in images:
        pa, pb = a(image), b(image)
        worst = min(worst, float((pa.panoptic == pb.panoptic).mean()))
        key = [(s.category_id, s.isthing, s.area) for s in pa.segments]
        same += key == [(s.category_id, s.isthing, s.area) for s in pb.segments]
    return worst, same


def _category_map(prediction: PanopticPrediction) -> np.ndarray:
    """``[H, W]`` category id per pixel (0: void)."""
    lut = np.zeros(int(prediction.panoptic.max()) + 1, np.int64)
    for segment in prediction.segments:
        lut[segment.id] = segment.category_id
    return lut[prediction.panoptic]


def test_raw_outputs_match_torch_and_onnxruntime(trained: Path, exported: dict[str, Path]) -> None:
    from maskconver.export.runtime import OnnxPanopticModel

    ov_model = OpenVinoPanopticModel(exported["xml"], threads=1)
    ort_model = OnnxPanopticModel(exported["onnx"], threads=1)
    torch_model = Predictor.from_checkpoint(trained).model.module  # type: ignore[attr-defined]
    image = (np.random.default_rng(4).random((96, 96, 3)) * 255).astype(np.uint8)
    raw, ort = ov_model.raw(image), ort_model.raw(image)
    assert sorted(raw) == sorted(ort)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(image).permute(2, 0, 1)[None].float())
    np.testing.assert_allclose(raw["mask_logits"], ref.mask_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(raw["mask_logits"], ort["mask_logits"], atol=1e-5)
    theirs = ref.scores[0].numpy()
    np.testing.assert_allclose(raw["peak_scores"][0], theirs, atol=1e-5)
    untied = [k for k in range(len(theirs)) if (np.abs(theirs - theirs[k]) < 1e-5).sum() == 1]
    assert untied, "the test needs untied peaks"
    for k in untied:  # tied scores may come out in another order
        assert raw["peak_classes"][0, k] == ref.classes[0, k]
        assert raw["center_indices"][0, k] == ref.center_indices[0, k]


def test_panoptic_maps_match_onnxruntime_and_eager_torch(
    trained: Path, exported: dict[str, Path]
) -> None:
    """The same maps as onnxruntime (measured: every pixel) and as eager torch up to rounding.

    Against torch the segment classes are the same and at least 99.9 % of the pixels: the
    bilinear resize of both runtimes differs from torch's by about 1e-7, which moves a few
    border pixels between two close masks (measured: 99.92 %, areas within 3 pixels).
    """
    images = _images()
    ov_predictor = Predictor.from_openvino(exported["xml"], threads=1)
    worst, same = _agreement(Predictor.from_onnx(exported["onnx"], threads=1), ov_predictor, images)
    assert worst >= 0.9999 and same >= len(images) - 1, (worst, same)
    torch_predictor = Predictor.from_checkpoint(trained)
    for image in images:
        ours, eager = ov_predictor(image), torch_predictor(image)
        assert float((ours.panoptic == eager.panoptic).mean()) >= 0.999
        key = [(s.category_id, s.isthing) for s in ours.segments]
        assert key == [(s.category_id, s.isthing) for s in eager.segments]


# kMaX's graph gathers with GatherElements indices smaller than the data (ONNX and onnxruntime
# allow it); OpenVINO's CPU plugin refuses it or, with one thread, returns an empty owner map
# (the backend raises then)
# meta-architecture -> why its graph does not run on OpenVINO (none today: the maskformer merge's
# GatherElements, which OpenVINO refused, is a one-hot sum in traced graphs)
KNOWN_FAILURES: dict[str, str] = {}


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param(m, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[m], raises=ExportError))
        if m in KNOWN_FAILURES
        else m
        for m in sorted(ARCHITECTURES)
    ],
)
def test_graph_on_openvino_equals_eager_inference(meta: str, tmp_path: Path) -> None:
    """``test_export_eager_parity``'s ONNX body, run by OpenVINO (random weights, open merge)."""
    from maskconver.inference import predict_samples

    cfg, categories, num_classes, model, post, samples = _setup(meta)
    onnx_path = tmp_path / f"{meta}.onnx"
    export_model(model, cfg, categories, num_classes, onnx_path, size=(96, 96))
    convert_onnx(onnx_path, tmp_path / f"{meta}.xml")
    backend = OpenVinoPanopticModel(tmp_path / f"{meta}.xml", threads=1)
    for sample in samples:
        (eager,) = predict_samples(model, post, [sample])
        (exported,) = backend.predict([sample], post)
        assert float((exported.panoptic == eager.panoptic).mean()) >= ORT_AGREEMENT
        key = [(s.id, s.category_id, s.isthing) for s in exported.segments]
        assert key == [(s.id, s.category_id, s.isthing) for s in eager.segments]
        for a, b in zip(exported.segments, eager.segments, strict=True):
            assert abs(a.area - b.area) <= max(1, ORT_AREA_SLACK * b.area)


def test_int8_keeps_the_merge_in_float_and_agrees(exported: dict[str, Path]) -> None:
    import openvino as ov

    quantized = ov.Core().read_model(str(exported["int8"]))
    fake_quantize = {
        op.get_friendly_name()
        for op in quantized.get_ordered_ops()
        if op.get_type_name() == "FakeQuantize"
    }
    assert fake_quantize, "nothing was quantized"
    merge = set(merge_ops(ov.Core().read_model(str(exported["xml"]))))
    consumers = {
        target.get_node().get_friendly_name()
        for op in quantized.get_ordered_ops()
        if op.get_friendly_name() in fake_quantize
        for target in op.output(0).get_target_inputs()
    }
    assert not consumers & merge, sorted(consumers & merge)
    depthwise = {
        op.get_friendly_name()
        for op in quantized.get_ordered_ops()
        if op.get_type_name() == "GroupConvolution"
    }
    assert depthwise and not consumers & depthwise  # left in float by default (measured faster)
    assert exported["int8"].with_suffix(".bin").stat().st_size < (
        exported["xml"].with_suffix(".bin").stat().st_size
    )
    fp32 = Predictor.from_openvino(exported["xml"], threads=1)
    int8 = Predictor.from_openvino(exported["int8"], threads=1)
    agreement = [
        float((_category_map(fp32(image)) == _category_map(int8(image))).mean())
        for image in _images()
    ]
    assert float(np.mean(agreement)) >= INT8_AGREEMENT, agreement


def test_int8_loses_at_most_half_a_point_of_pq(exported: dict[str, Path]) -> None:
    """int8 PQ >= fp32 PQ - 0.5 on 32 synthetic scenes: a loss bound. On a short run the two
    differ by chance in either direction (int8 scored +0.54 on an AMD EPYC, within 0.5 on an
    Intel Xeon): a gain is no failure."""
    scenes = SyntheticPanoptic(PQ_IMAGES, seed=0, min_size=80, max_size=120, stream=VAL_STREAM)
    check = accuracy_check(
        exported["xml"], exported["int8"], images=PQ_IMAGES, threads=1, dataset=scenes
    )
    assert not isinstance(check, str), check
    assert check.images == PQ_IMAGES and check.data == "SyntheticPanoptic"
    assert check.pq_float > 0
    assert check.pq_int8 >= check.pq_float - INT8_PQ_DROP, check


def test_metadata_round_trip(trained: Path, exported: dict[str, Path]) -> None:
    from maskconver.engine.checkpoint import load_checkpoint

    meta = read_openvino_metadata(exported["xml"])
    onnx_meta = read_metadata(exported["onnx"])
    assert meta.to_props() == onnx_meta.to_props()
    assert meta.outputs == onnx_meta.outputs
    loaded = load_checkpoint(trained)
    assert meta.config == loaded.config and meta.num_classes == loaded.num_classes
    assert [c.id for c in meta.categories.categories] == [
        c.id for c in loaded.categories.categories
    ]
    assert meta.quantization == "none" and meta.input_size == (96, 96)
    assert read_openvino_metadata(exported["int8"]).quantization == "static"
    for suffix in (".xml", ".bin"):  # normal permissions, not mkstemp's
        assert oct(exported["xml"].with_suffix(suffix).stat().st_mode & 0o777) != "0o600"
    assert not [p for p in exported["xml"].parent.iterdir() if p.name.startswith(".")]


def test_missing_corrupt_and_foreign_files_are_refused(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    import openvino as ov

    with pytest.raises(ExportError, match="not found"):
        OpenVinoPanopticModel(tmp_path / "missing.xml")
    (tmp_path / "junk.xml").write_text("<net><layers>")
    (tmp_path / "junk.bin").write_bytes(b"")
    with pytest.raises(ExportError, match="junk.xml is not a readable OpenVINO model"):
        read_openvino_metadata(tmp_path / "junk.xml")
    shutil.copy(exported["xml"], tmp_path / "alone.xml")
    with pytest.raises(ExportError, match="alone.bin are missing"):
        Predictor.from_openvino(tmp_path / "alone.xml")
    foreign = ov.Core().read_model(str(exported["xml"]))
    plain = ov.Model(foreign.outputs, foreign.get_parameters(), "plain")
    ov.save_model(plain, str(tmp_path / "plain.xml"))
    with pytest.raises(ExportError, match="not a maskconver export"):
        read_openvino_metadata(tmp_path / "plain.xml")


def test_cli_export_predict_and_evaluate_with_an_ir(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from maskconver.cli import main
    from maskconver.data.synthetic import write_synthetic_dataset

    path = tmp_path / "m.xml"
    export = ["export", "--checkpoint", str(trained), "--format", "openvino"]
    assert main([*export, "--output", str(path)]) == 0
    assert path.is_file() and path.with_suffix(".bin").is_file()
    assert main([*export, "--output", str(tmp_path / "m.onnx")]) == 2  # suffix of the format
    root = tmp_path / "data"
    write_synthetic_dataset(root, train=0, val=4, seed=3, min_size=80, max_size=120, progress=False)
    common = ["--data-root", str(root), "--threads", "1"]
    out_t, out_o = tmp_path / "t.json", tmp_path / "o.json"
    assert main(["evaluate", "--checkpoint", str(trained), *common, "--output", str(out_t)]) == 0
    assert main(["evaluate", "--model", str(path), *common, "--output", str(out_o)]) == 0
    pq_t = json.loads(out_t.read_text())["all"]["pq"]
    pq_o = json.loads(out_o.read_text())["all"]["pq"]
    assert abs(pq_t - pq_o) <= 1e-3, (pq_t, pq_o)
    predict = ["predict", "--input", str(root / "val2017"), "--threads", "1", "--no-overlay"]
    assert main([*predict, "--model", str(path), "--output", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "predictions.json").is_file()
    bf16 = ["--model", str(path), "--precision", "bf16"]  # OpenVINO's inference precision
    assert main([*predict, *bf16, "--output", str(tmp_path / "pred_bf16")]) == 0
    assert (tmp_path / "pred_bf16" / "predictions.json").is_file()
    out_b = tmp_path / "b.json"
    assert main(["evaluate", *bf16, *common, "--output", str(out_b)]) == 0
    assert 0.0 <= json.loads(out_b.read_text())["all"]["pq"] <= 1.0
    capsys.readouterr()
    onnx_bf16 = ["--model", str(tmp_path / "m.onnx"), "--precision", "bf16"]
    assert main([*predict, *onnx_bf16, "--output", str(tmp_path / "y")]) == 2  # .xml only
    assert "--precision bf16 applies to OpenVINO .xml models" in capsys.readouterr().err
    (tmp_path / "junk.xml").write_text("not xml")
    assert main([*predict, "--model", str(tmp_path / "junk.xml"), "--output", str(tmp_path / "x")])


@pytest.mark.slow  # 8-14 s: 32 calibration images, quantization, two evaluations
def test_cli_int8_export_prints_the_pq_check(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from maskconver.cli import main

    path = tmp_path / "m.xml"
    args = ["export", "--checkpoint", str(trained), "--format", "openvino", "--output", str(path)]
    assert main([*args, "--int8", "--check-images", "4"]) == 0
    out = capsys.readouterr().out
    assert path.is_file() and (tmp_path / "m.fp32.xml").is_file()
    assert "int8 check on 4 synthetic validation images: PQ float" in out, out
    assert read_openvino_metadata(path).quantization == "static"
    assert main([*args, "--int8", "dynamic", "--overwrite"]) == 2


def test_compare_times_openvino_without_its_merge() -> None:
    """``benchmark --compare``'s OpenVINO rows without the merge run the network-only graph:
    fp32 gives onnxruntime's raw outputs, int8 runs (the merge's share on OpenVINO)."""
    from maskconver.benchmarking import deployments

    built = deployments.build("tiny", ["model.num_proposals=5"], 64, 5)
    assert deployments.openvino_network_calls(built, 1) == {}  # no network-only graph yet
    calls = deployments.onnxruntime_contenders(built, 1)
    reference = calls[f"onnxruntime fp32{deployments.NETWORK_ONLY}"]()
    network = deployments.openvino_network_calls(built, 1)
    assert set(network) == {f"OpenVINO {p}{deployments.NETWORK_ONLY}" for p in ("fp32", "int8")}
    fp32 = network[f"OpenVINO fp32{deployments.NETWORK_ONLY}"]()
    assert len(fp32) == len(reference)
    for got, expected in zip(fp32.values(), reference, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    assert len(network[f"OpenVINO int8{deployments.NETWORK_ONLY}"]()) == len(reference)
