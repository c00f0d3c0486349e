"""ONNX export: parity with torch at two sizes and a dynamic size, metadata, the onnxruntime
backend behind ``Predictor``/``evaluate``, int8, and "free at inference" for ReMaX.

A short training (session fixture) gives weights whose proposals are distinct; an untrained
model has near-identical masks, where a rounding difference of 1e-7 between onnxruntime's and
torch's bilinear resize decides argmax ties.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from maskconver.data.synthetic import VAL_STREAM, SyntheticPanoptic  # noqa: E402
from maskconver.export.onnx import ExportError, export_onnx, quantize_onnx, read_metadata  # noqa: E402
from maskconver.predictor import Predictor  # noqa: E402

TRAIN = [
    "train.max_steps=150",
    "train.batch_size=4",
    "train.warmup_steps=10",
    "train.lr=0.004",
    "train.ema=false",
    "train.log_every=50",
    "train.ckpt_every=150",
    "train.max_eval_images=1",
    "augment.input_size=[96, 96]",
    "eval.input_size=96",
    "data.synthetic_train=64",
    "data.synthetic_val=8",
    "data.synthetic_min_size=80",
    "data.synthetic_max_size=120",
]


def _train(tmp: Path, extra: list[str]) -> Path:
    from maskconver.config import load_config
    from maskconver.engine.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train(load_config("tiny", TRAIN + extra), tmp, progress=False)
    finally:
        torch.set_num_threads(threads)
    return Path(summary["checkpoint"])


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("export_run"), [])


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


@pytest.mark.parametrize("size", [None, (80, 112)], ids=["square", "80x112"])
def test_fixed_size_export_matches_torch(trained: Path, tmp_path: Path, size: tuple | None) -> None:
    path = tmp_path / "model.onnx"
    meta = export_onnx(trained, path, size=size)
    assert meta.input_size == (size or (96, 96))
    onnx_predictor = Predictor.from_onnx(path, threads=1)
    torch_predictor = Predictor.from_checkpoint(trained)
    if size is not None:  # the torch side gets the same fit-and-pad transform
        torch_predictor.transform = onnx_predictor.transform
    images = _images()
    worst, same = _agreement(torch_predictor, onnx_predictor, images)
    assert worst >= 0.999 and same >= len(images) - 1, (worst, same)


def test_dynamic_export_matches_torch_at_two_sizes(trained: Path, tmp_path: Path) -> None:
    path = tmp_path / "dynamic.onnx"
    assert export_onnx(trained, path, dynamic=True).input_size is None
    model = Predictor.from_onnx(path, threads=1).model
    torch_model = Predictor.from_checkpoint(trained).model.module  # type: ignore[attr-defined]
    for h, w in [(96, 96), (64, 128)]:
        image = (np.random.default_rng(h).random((h, w, 3)) * 255).astype(np.uint8)
        raw = model.raw(image)  # type: ignore[attr-defined]
        with torch.no_grad():
            ref = torch_model(torch.from_numpy(image).permute(2, 0, 1)[None].float())
        np.testing.assert_allclose(raw["mask_logits"], ref.mask_logits.numpy(), atol=1e-4)
        # peaks: the same scores; where a score is not tied, the same class and position
        ours, theirs = raw["peak_scores"][0], ref.scores[0].numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        untied = [k for k in range(len(theirs)) if (np.abs(theirs - theirs[k]) < 1e-5).sum() == 1]
        assert untied, "the test needs untied peaks"
        for k in untied:
            assert raw["peak_classes"][0, k] == ref.classes[0, k]
            assert raw["center_indices"][0, k] == ref.center_indices[0, k]
    images = _images(4)
    worst, same = _agreement(Predictor.from_checkpoint(trained), Predictor.from_onnx(path), images)
    assert worst >= 0.999 and same >= len(images) - 1


def test_metadata_round_trip_and_errors(trained: Path, tmp_path: Path) -> None:
    from maskconver.engine.checkpoint import load_checkpoint

    path = tmp_path / "m.onnx"
    export_onnx(trained, path)
    meta = read_metadata(path)
    loaded = load_checkpoint(trained)
    assert meta.config == loaded.config
    assert [c.id for c in meta.categories.categories] == [
        c.id for c in loaded.categories.categories
    ]
    assert meta.num_classes == loaded.num_classes and meta.quantization == "none"
    assert oct(path.stat().st_mode & 0o777) != "0o600"  # normal permissions, not mkstemp's
    with pytest.raises(ExportError, match="not found"):
        read_metadata(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match="junk.onnx"):
        read_metadata(tmp_path / "junk.onnx")


def test_metadata_of_an_export_format_1_file_migrates_its_config() -> None:
    import yaml

    from maskconver.config import CONFIG_FORMAT, load_config
    from maskconver.data.types import Category, CategorySet
    from maskconver.export.onnx import METADATA_PREFIX, OnnxMetadata

    cats = CategorySet([Category(1, "a", True), Category(2, "b", False)])
    current = OnnxMetadata(load_config("tiny"), cats, 2, None, ["owner"], "none", "0.1.0")
    props = current.to_props()
    assert props[f"{METADATA_PREFIX}config_format"] == str(CONFIG_FORMAT)
    assert OnnxMetadata.from_props(props, "new.onnx").config == current.config
    # export format 1 wrote the config in the checkpoint-format-2 layout, without config_format
    old_tree = {
        "model": {"level": 2, "mask_level": None},
        "loss": {"bce_weight": 3.0},
        "postprocess": {"merge": "maskformer", "object_threshold": 0.2},
    }
    del props[f"{METADATA_PREFIX}config_format"]
    props[f"{METADATA_PREFIX}format"] = "1"
    props[f"{METADATA_PREFIX}config"] = yaml.safe_dump(old_tree)
    expected = load_config(
        None,
        [
            "model.maskconver.level=2",
            "model.maskconver.loss.bce_weight=3.0",
            "model.maskconver.merge.mode=maskformer",
            "model.maskconver.merge.object_threshold=0.2",
        ],
    )
    assert OnnxMetadata.from_props(props, "old.onnx").config == expected


def test_predictor_from_onnx_on_path_array_and_pil(trained: Path, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "m.onnx"
    export_onnx(trained, path)
    predictor = Predictor.from_onnx(path)
    image = _images(1)[0]
    file = tmp_path / "scene.png"
    Image.fromarray(image).save(file)
    results = [predictor(image), predictor(str(file)), predictor(Image.fromarray(image))]
    for r in results:
        assert r.panoptic.shape == image.shape[:2]
        np.testing.assert_array_equal(r.panoptic, results[0].panoptic)
    assert {c.id for c in predictor.categories.categories} >= {
        s.category_id for s in results[0].segments
    }


def test_evaluate_and_predict_cli_with_the_onnx_backend(trained: Path, tmp_path: Path) -> None:
    import json

    from maskconver.cli import main
    from maskconver.data.synthetic import write_synthetic_dataset

    path = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(trained), "--output", str(path)]) == 0
    assert main(["export", "--checkpoint", str(trained), "--output", str(path)]) == 2  # exists
    root = tmp_path / "data"
    write_synthetic_dataset(root, train=0, val=6, seed=3, min_size=80, max_size=120, progress=False)
    out_t, out_o = tmp_path / "t.json", tmp_path / "o.json"
    common = ["--data-root", str(root), "--threads", "1"]
    assert main(["evaluate", "--checkpoint", str(trained), *common, "--output", str(out_t)]) == 0
    assert main(["evaluate", "--model", str(path), *common, "--output", str(out_o)]) == 0
    pq_t = json.loads(out_t.read_text())["all"]["pq"]
    pq_o = json.loads(out_o.read_text())["all"]["pq"]
    assert abs(pq_t - pq_o) <= 1e-3, (pq_t, pq_o)
    assert (
        main(
            [
                "predict",
                "--model",
                str(path),
                "--input",
                str(root / "val2017"),
                "--output",
                str(tmp_path / "pred"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert (tmp_path / "pred" / "predictions.json").is_file()
    assert (
        main(["evaluate", "--checkpoint", str(trained), "--backend", "onnxruntime", *common]) == 2
    )  # a checkpoint must be exported first


def test_int8_exports_run_and_score(trained: Path, tmp_path: Path) -> None:
    from maskconver.commands.export import calibration_inputs

    float_path = tmp_path / "m.onnx"
    export_onnx(trained, float_path)
    feeds = calibration_inputs(float_path, None, count=4)
    for mode in ("static", "dynamic"):
        out = tmp_path / f"m_{mode}.onnx"
        meta = quantize_onnx(float_path, out, mode=mode, calibration=feeds)
        assert meta.quantization == mode == read_metadata(out).quantization
        assert out.stat().st_size < float_path.stat().st_size
        result = Predictor.from_onnx(out)(_images(1)[0])
        assert result.panoptic.shape == _images(1)[0].shape[:2]


def test_static_int8_quantizes_the_network_only(trained: Path, tmp_path: Path) -> None:
    """Static int8 quantizes inside ``/model/`` (its additions too); the merge stays float."""
    import onnx

    from maskconver.commands.export import calibration_inputs
    from maskconver.export.scope import merge_node_names

    float_path, out = tmp_path / "m.onnx", tmp_path / "m8.onnx"
    export_onnx(trained, float_path)
    quantize_onnx(float_path, out, mode="static", calibration=calibration_inputs(float_path, None))
    source, quantized = onnx.load(str(float_path)), onnx.load(str(out))
    producers = {o: n for n in quantized.graph.node for o in n.output}

    def from_dequantize(node: onnx.NodeProto) -> bool:
        return any(
            i in producers and producers[i].op_type == "DequantizeLinear" for i in node.input
        )

    ops = {n.name: n.op_type for n in source.graph.node}
    merge_matmuls = [n for n in merge_node_names(source) if ops[n] == "MatMul"]
    assert merge_matmuls  # the fast merge's one-hot gathers
    kept = {n.name: n for n in quantized.graph.node}
    for name in merge_matmuls:  # still float MatMuls on float inputs
        assert kept[name].op_type == "MatMul" and not from_dequantize(kept[name])
    adds = [n for n in quantized.graph.node if n.op_type == "Add" and n.name.startswith("/model/")]
    assert adds and all(from_dequantize(n) for n in adds)  # additions run between Q/DQ pairs


def test_remax_training_changes_nothing_in_the_export(trained: Path, tmp_path: Path) -> None:
    """The exported graphs with and without ReMaX have the same weights, inputs and outputs."""
    import onnx

    from maskconver.build import build_model
    from maskconver.config import load_config
    from maskconver.data.synthetic import synthetic_categories
    from maskconver.export.onnx import export_model

    paths = {}
    for name, extra in (
        ("plain", []),
        (
            "remax",
            [
                "model.maskconver.loss.semantic_weight=0.5",
                "model.maskconver.loss.remask=literal",
                "model.maskconver.loss.reclass_eta=0.1",
            ],
        ),
    ):
        cfg = load_config("tiny", extra)
        torch.manual_seed(0)
        model = build_model(cfg.model, synthetic_categories().num_classes)
        paths[name] = tmp_path / f"{name}.onnx"
        export_model(
            model, cfg, synthetic_categories(), synthetic_categories().num_classes, paths[name]
        )
    graphs = {k: onnx.load(str(p)) for k, p in paths.items()}
    weights = {
        k: {i.name: onnx.numpy_helper.to_array(i) for i in g.graph.initializer}
        for k, g in graphs.items()
    }
    assert weights["plain"].keys() == weights["remax"].keys()
    assert all(np.array_equal(weights["plain"][n], weights["remax"][n]) for n in weights["plain"])
    assert [o.name for o in graphs["plain"].graph.output] == [
        o.name for o in graphs["remax"].graph.output
    ]
    a, b = (Predictor.from_onnx(p)(_images(1)[0]) for p in paths.values())
    np.testing.assert_array_equal(a.panoptic, b.panoptic)


def test_dr1_model_exports_with_parity(tmp_path: Path) -> None:
    ckpt = _train(
        tmp_path / "dr1",
        [
            "model.decoder.name=dr1basis",
            "model.decoder.max_level=5",
            "model.decoder.dr1.width=16",
            "train.max_steps=60",
            "train.ckpt_every=60",
        ],
    )
    path = tmp_path / "dr1.onnx"
    export_onnx(ckpt, path, dynamic=True)  # aligned upsampling + crops stay dynamic
    model = Predictor.from_onnx(path).model
    torch_model = Predictor.from_checkpoint(ckpt).model.module  # type: ignore[attr-defined]
    for h, w in [(96, 96), (68, 124)]:  # 68 x 124: level sizes 17x31, 9x16, 5x8, 3x4
        image = (np.random.default_rng(h).random((h, w, 3)) * 255).astype(np.uint8)
        raw = model.raw(image)  # type: ignore[attr-defined]
        with torch.no_grad():
            ref = torch_model(torch.from_numpy(image).permute(2, 0, 1)[None].float())
        assert raw["mask_logits"].shape[-2:] == (-(-h // 4), -(-w // 4))  # stride 4
        np.testing.assert_allclose(raw["mask_logits"], ref.mask_logits.numpy(), atol=1e-4)
        np.testing.assert_allclose(raw["peak_scores"], ref.scores.numpy(), atol=1e-5)
