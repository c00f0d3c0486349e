"""kMaX-DeepLab end to end through the command line and the public API.

A user-style COCO panoptic dataset (non-contiguous category ids, crowd segments, void):
``train`` (a few steps, tiny images, ReMaX on) -> ``evaluate`` (model mode, saving the
predictions) -> ``evaluate`` (files mode, must agree) -> ``predict``; ``Predictor``, ``config
show``, ``benchmark``, ``export`` with onnxruntime parity, ``--resume`` and bf16 training. The
untrained model's thresholds are opened up so that every image gets segments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from maskconver.cli import main
from maskconver.data.coco_panoptic import standard_paths
from maskconver.data.panoptic_png import read_panoptic_png
from maskconver.data.synthetic import TRAIN_STREAM, VAL_STREAM, SyntheticPanoptic
from maskconver.data.writer import write_coco_panoptic

CATEGORY_IDS = [1, 3, 7, 12, 20, 31, 44]
NUM_VAL = 3
RUN = [
    "train.max_steps=3",
    "train.batch_size=2",
    "train.warmup_steps=1",
    "train.log_every=1",
    "augment.input_size=[64, 64]",
    "eval.input_size=64",
    "model.num_proposals=12",
    "model.kmax.loss.remask_stages=2",
    "model.kmax.loss.reclass_eta=0.1",
    "model.kmax.merge.object_threshold=0.0",
    "model.kmax.merge.overlap_threshold=0.0",
    "model.kmax.merge.mask_threshold=0.0",
]


@pytest.fixture(scope="module")
def user_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kmax_coco")
    for split, count, stream in (("train2017", 4, TRAIN_STREAM), ("val2017", NUM_VAL, VAL_STREAM)):
        source = SyntheticPanoptic(
            count, seed=11, min_size=40, max_size=56, crowd_prob=0.4, stream=stream
        )
        samples = [source[i] for i in range(count)]
        for sample in samples:
            sample.image_id = 500 + 3 * int(sample.image_id)
        write_coco_panoptic(samples, root, split, source.categories, image_format="png")
    return root


def _train(data: Path, run: Path, *extra: str) -> int:
    args = ["train", "--config", "kmax_tiny", "--data-root", str(data)]
    args += ["--output-dir", str(run), "--no-progress"]
    for item in [*RUN, *extra]:
        args += ["--set", item]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(args)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained_run(user_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("kmax_run")
    assert _train(user_dataset, run) == 0
    return run


def _scores(metrics: dict) -> dict[str, tuple[float, float, float]]:
    return {k: tuple(metrics[k][m] for m in ("pq", "sq", "rq")) for k in ("all", "things", "stuff")}


def test_train_evaluate_predict_through_the_cli(
    user_dataset: Path, trained_run: Path, tmp_path: Path
) -> None:
    checkpoint = trained_run / "checkpoints" / "best"
    meta = json.loads((checkpoint / "meta.json").read_text())
    assert meta["meta_architecture"] == "kmax"
    assert [c["id"] for c in meta["categories"]] == CATEGORY_IDS
    # the ReMaX heads are training-only: saved with the criterion, not in the model
    assert (checkpoint / "criterion.safetensors").is_file()
    records = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert len(train_records) == 3
    for key in ("loss_pq_class", "loss_mask_id", "loss_remask_semantic", "stat_fp_ce"):
        assert all(np.isfinite(r[key]) for r in train_records), key

    preds, model_json = tmp_path / "preds", tmp_path / "model.json"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(user_dataset)]
    assert main([*args, "--save-predictions", str(preds), "--output", str(model_json)]) == 0
    _, gt_json, gt_dir = standard_paths(user_dataset, "val2017")
    saved = json.loads((preds / "predictions.json").read_text())
    segments = [s for a in saved["annotations"] for s in a["segments_info"]]
    assert segments, "the opened-up thresholds must predict segments"
    assert {s["category_id"] for s in segments} <= set(CATEGORY_IDS)
    files_json = tmp_path / "files.json"
    files_args = ["evaluate", "--gt-json", str(gt_json), "--gt-dir", str(gt_dir)]
    files_args += ["--pred-json", str(preds / "predictions.json")]
    files_args += ["--pred-dir", str(preds / "panoptic"), "--output", str(files_json)]
    assert main(files_args) == 0
    from_model = json.loads(model_json.read_text())
    from_files = json.loads(files_json.read_text())
    assert from_model["images"] == NUM_VAL
    for split, values in _scores(from_model).items():
        np.testing.assert_allclose(values, _scores(from_files)[split], rtol=0, atol=1e-9)

    out = tmp_path / "predicted"
    images = sorted((user_dataset / "val2017").iterdir())
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", *map(str, images)]
                + ["--output", str(out)]) == 0  # fmt: skip
    payload = json.loads((out / "predictions.json").read_text())
    assert [a["image_id"] for a in payload["annotations"]] == [p.stem for p in images]
    for image, ann in zip(images, payload["annotations"]):
        ids = read_panoptic_png(out / f"{image.stem}.png")
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in ann["segments_info"]}


def test_predictor_config_and_benchmark(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from maskconver.predictor import Predictor

    predictor = Predictor.from_checkpoint(trained_run / "checkpoints" / "best")
    image = SyntheticPanoptic(1, seed=2, min_size=50, max_size=70)[0].image
    result = predictor(image)
    assert result.panoptic.shape == image.shape[:2]
    assert {s.id for s in result.segments} == set(np.unique(result.panoptic).tolist()) - {0}

    assert main(["config", "show", "kmax_tiny"]) == 0
    assert "meta_architecture: kmax" in capsys.readouterr().out
    args = ["benchmark", "--config", "kmax_tiny", "--runs", "1", "--warmup", "0"]
    assert main([*args, "--size", "64", "64", "--num-classes", "7", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["params"] > 0 and report["macs"] > 0 and report["latency_ms"] > 0


def test_onnx_export_matches_torch(trained_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX check needs the [onnx] extra")
    from maskconver.export.runtime import OnnxPanopticModel
    from maskconver.predictor import Predictor

    checkpoint = trained_run / "checkpoints" / "best"
    output = tmp_path / "kmax.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(output)]) == 0
    onnx_model = OnnxPanopticModel(output, threads=1)
    assert onnx_model.output_names == [
        "owner", "keep", "classes", "scores", "areas", "class_logits", "mask_logits"
    ]  # fmt: skip
    torch_predictor = Predictor.from_checkpoint(checkpoint)
    onnx_predictor = Predictor.from_onnx(output)
    scenes = SyntheticPanoptic(3, seed=9, min_size=50, max_size=90, stream=VAL_STREAM)
    for i in range(len(scenes)):
        image = scenes[i].image
        sample = torch_predictor.prepare(image)
        raw = onnx_model.raw(sample.image)
        with torch.no_grad():
            out = torch_predictor.model(
                torch.from_numpy(sample.image).permute(2, 0, 1)[None].float()
            )
        np.testing.assert_allclose(raw["class_logits"], out.class_logits.numpy(), atol=1e-3)
        np.testing.assert_allclose(raw["mask_logits"], out.mask_logits.numpy(), atol=1e-3)
        a, b = onnx_predictor(image), torch_predictor(image)
        assert (a.panoptic == b.panoptic).mean() >= 0.999


def test_resume_and_bf16(user_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _train(user_dataset, run, "train.max_steps=2", "train.amp=bf16") == 0
    assert _train(user_dataset, run, "train.max_steps=3", "train.amp=bf16") == 2  # not --resume
    args = ["train", "--config", "kmax_tiny", "--data-root", str(user_dataset), "--resume"]
    args += ["--output-dir", str(run), "--no-progress"]
    for item in [*RUN, "train.max_steps=3", "train.amp=bf16"]:
        args += ["--set", item]
    assert main(args) == 0
    steps = [
        json.loads(x)["step"]
        for x in (run / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "train"
    ]
    assert steps == [1, 2, 3]
