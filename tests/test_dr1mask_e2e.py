"""DR1Mask end to end through the command line and the public API.

A user-style COCO panoptic dataset (non-contiguous category ids 1, 3, 7, 12 / 20, 31, 44, crowd
segments, void): ``train`` (a few steps, tiny images) -> ``evaluate`` (model mode, saving the
predictions) -> ``evaluate`` (files mode, must agree) -> ``predict``; the checkpoint records the
meta-architecture; ``Predictor``, ``config show`` and ``benchmark`` work with it. Slow: the
ONNX export against torch, and a 2-process DDP run. The untrained model's thresholds are opened
up so that every image gets segments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
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
    "model.dr1mask.merge.object_threshold=0.0",
    "model.dr1mask.merge.min_area=0",
    "model.dr1mask.mask_size=14",
]


@pytest.fixture(scope="module")
def user_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dr1mask_coco")
    for split, count, stream in (("train2017", 4, TRAIN_STREAM), ("val2017", NUM_VAL, VAL_STREAM)):
        source = SyntheticPanoptic(
            count, seed=11, min_size=40, max_size=56, crowd_prob=0.4, stream=stream
        )
        samples = [source[i] for i in range(count)]
        for sample in samples:
            sample.image_id = 500 + 3 * int(sample.image_id)
        write_coco_panoptic(samples, root, split, source.categories, image_format="png")
    return root


@pytest.fixture(scope="module")
def trained_run(user_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("dr1mask_run")
    args = ["train", "--config", "dr1mask_small", "--data-root", str(user_dataset)]
    args += ["--output-dir", str(run), "--no-progress"]
    for item in RUN:
        args += ["--set", item]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return run


def _scores(metrics: dict) -> dict[str, tuple[float, float, float]]:
    return {k: tuple(metrics[k][m] for m in ("pq", "sq", "rq")) for k in ("all", "things", "stuff")}


def test_train_evaluate_predict_through_the_cli(
    user_dataset: Path, trained_run: Path, tmp_path: Path
) -> None:
    checkpoint = trained_run / "checkpoints" / "best"
    meta = json.loads((checkpoint / "meta.json").read_text())
    assert meta["meta_architecture"] == "dr1mask"
    assert [c["id"] for c in meta["categories"]] == CATEGORY_IDS

    preds, model_json = tmp_path / "preds", tmp_path / "model.json"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(user_dataset)]
    assert main([*args, "--save-predictions", str(preds), "--output", str(model_json)]) == 0
    _, gt_json, gt_dir = standard_paths(user_dataset, "val2017")
    saved = json.loads((preds / "predictions.json").read_text())
    segments = [s for a in saved["annotations"] for s in a["segments_info"]]
    assert segments, "the opened-up thresholds must predict segments"
    assert {s["category_id"] for s in segments} <= set(CATEGORY_IDS)
    for ann in saved["annotations"]:
        ids = set(np.unique(read_panoptic_png(preds / "panoptic" / ann["file_name"])).tolist())
        assert ids - {0} == {s["id"] for s in ann["segments_info"]}
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
    assert (
        main(
            ["predict", "--checkpoint", str(checkpoint), "--input", *map(str, images)]
            + [
                "--output",
                str(out),
            ]
        )
        == 0
    )
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
    optimized = Predictor.from_checkpoint(trained_run / "checkpoints" / "best", optimize=True)
    assert (optimized(image).panoptic == result.panoptic).mean() > 0.99

    assert main(["config", "show", "dr1mask_small"]) == 0
    assert "meta_architecture: dr1mask" in capsys.readouterr().out
    code = main(
        [
            "benchmark",
            "--config",
            "dr1mask_small",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--size",
            "64",
            "64",
            "--num-classes",
            "7",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["params"] > 0 and report["macs"] > 0 and report["latency_ms"] > 0


@pytest.mark.slow
def test_onnx_export_matches_torch(trained_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from maskconver.export.runtime import OnnxPanopticModel
    from maskconver.predictor import Predictor

    checkpoint = trained_run / "checkpoints" / "best"
    output = tmp_path / "dr1mask.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(output)]) == 0
    onnx_model = OnnxPanopticModel(output)
    assert onnx_model.output_names[:5] == ["owner", "keep", "classes", "scores", "areas"]
    torch_predictor = Predictor.from_checkpoint(checkpoint)
    onnx_predictor = Predictor.from_onnx(output)
    scenes = SyntheticPanoptic(4, seed=9, min_size=50, max_size=90, stream=VAL_STREAM)
    for i in range(len(scenes)):
        image = scenes[i].image
        sample = torch_predictor.prepare(image)
        raw = onnx_model.raw(sample.image)
        with torch.no_grad():
            out = torch_predictor.model(
                torch.from_numpy(sample.image).permute(2, 0, 1)[None].float()
            )
        np.testing.assert_allclose(raw["det_scores"], out.scores.numpy(), atol=1e-4)
        np.testing.assert_array_equal(raw["det_classes"], out.classes.numpy())
        np.testing.assert_allclose(raw["det_boxes"], out.boxes.numpy(), atol=1e-3)
        np.testing.assert_allclose(raw["panoptic_logits"], out.panoptic_logits.numpy(), atol=1e-3)
        a, b = onnx_predictor(image), torch_predictor(image)
        assert (a.panoptic == b.panoptic).mean() > 0.99
    # the paste merge has no graph: a clear error instead of a wrong export
    from maskconver.config import merge_overrides
    from maskconver.engine.checkpoint import load_model
    from maskconver.export.onnx import ExportError, export_model

    model, cfg, categories, num_classes = load_model(checkpoint)
    paste = merge_overrides(cfg, ["model.dr1mask.merge.mode=paste"])
    with pytest.raises(ExportError, match="merge.mode=paste is not exportable"):
        export_model(model, paste, categories, num_classes, tmp_path / "paste.onnx")
    assert not (tmp_path / "paste.onnx").exists()


WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import maskconver.engine.train as train_module
    from maskconver.config import load_config

    out, states, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    built = []
    real = train_module.build_model

    def capture(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    train_module.build_model = capture
    torch.set_num_threads(1)
    summary = train_module.train(load_config("dr1mask_small", overrides), out, progress=False)
    assert summary["steps"] == 2, summary
    torch.save(
        {"params": dict(built[0].named_parameters()), "pq": summary["pq"]},
        os.path.join(states, f"rank{os.environ['RANK']}.pt"),
    )
    """
)


@pytest.mark.slow
def test_two_process_ddp_training_keeps_weights_identical(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    states = tmp_path / "states"
    states.mkdir()
    overrides = [
        "train.max_steps=2",
        "train.batch_size=4",
        "train.grad_accum=2",
        "train.warmup_steps=1",
        "train.max_eval_images=2",
        "augment.input_size=[64,64]",
        "data.synthetic_train=8",
        "data.synthetic_val=2",
        "data.synthetic_min_size=64",
        "data.synthetic_max_size=80",
        "eval.input_size=64",
        "eval.batch_size=1",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(script), str(tmp_path / "run"), str(states), *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0 = torch.load(states / "rank0.pt", weights_only=True)
    rank1 = torch.load(states / "rank1.pt", weights_only=True)
    for name, value in rank0["params"].items():
        torch.testing.assert_close(rank1["params"][name], value, rtol=0, atol=0, msg=name)
    assert rank0["pq"] == rank1["pq"]
    assert (tmp_path / "run" / "checkpoints" / "step_000002" / "model.safetensors").is_file()


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    from maskconver.config import load_config
    from maskconver.engine.checkpoint import load_checkpoint
    from maskconver.engine.logging import read_metrics
    from maskconver.engine.train import train

    overrides = [
        "train.max_steps=4",
        "train.batch_size=2",
        "train.warmup_steps=1",
        "train.log_every=1",
        "train.ckpt_every=100",
        "train.max_eval_images=1",
        "augment.input_size=[64,64]",
        "data.synthetic_train=6",
        "data.synthetic_val=1",
        "data.synthetic_min_size=64",
        "data.synthetic_max_size=72",
        "eval.input_size=64",
        "model.dr1mask.mask_size=14",
    ]
    cfg = load_config("dr1mask_small", overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, tmp_path / "full", progress=False)
        train(cfg, tmp_path / "split", progress=False, stop_at=2)
        second = train(cfg, tmp_path / "split", resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert second["start_step"] == 2 and second["steps"] == 4

    def losses(run: Path) -> dict[int, dict[str, float]]:
        return {
            r["step"]: {k: v for k, v in r.items() if k.startswith("loss")}
            for r in read_metrics(run)
            if r["kind"] == "train"
        }

    expected, got = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(expected) == sorted(got) == [1, 2, 3, 4]
    for step, terms in expected.items():
        for name, value in terms.items():
            assert got[step][name] == pytest.approx(value, rel=0, abs=1e-6), (step, name)
    assert len({round(t["loss"], 6) for t in expected.values()}) > 1
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    for name, tensor in a.model_state.items():
        torch.testing.assert_close(b.model_state[name], tensor, rtol=0, atol=1e-6)
