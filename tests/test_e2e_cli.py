"""End to end through the command line on a user-style COCO panoptic dataset.

The dataset has non-contiguous category ids (1, 3, 7, 12 things; 20, 31, 44 stuff), void pixels
and crowd segments. ``train`` -> ``evaluate`` (model mode, saving predictions) -> ``evaluate``
(files mode) and ``hotcoco.panoptic.pq_compute`` on the same saved files must report the same
PQ/SQ/RQ to 1e-9; ``predict`` writes PNGs, one JSON and overlays and skips a corrupt file.

The model is trained for 3 steps only, so its post-processing is opened up (MaskFormer merge with
thresholds 0): every image gets predicted segments, hence false positives and per-class counts
that the three evaluations must agree on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_UNTRAINED_RUN

from maskconver.cli import main
from maskconver.data.coco_panoptic import CocoPanopticDataset, standard_paths
from maskconver.data.panoptic_png import read_panoptic_png
from maskconver.data.synthetic import TRAIN_STREAM, VAL_STREAM, SyntheticPanoptic
from maskconver.data.writer import write_coco_panoptic

TOLERANCE = 1e-9
CROWD_PROB = 0.4
NUM_TRAIN, NUM_VAL = 4, 3
SIZE_RANGE = (40, 56)
TRAIN_OVERRIDES = ["train.max_steps=3", *SMALL_UNTRAINED_RUN]


@pytest.fixture(scope="module")
def user_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COCO panoptic dataset on disk (lossless PNG images) with crowd and void."""
    root = tmp_path_factory.mktemp("user_coco")
    for split, count, stream in (
        ("train2017", NUM_TRAIN, TRAIN_STREAM),
        ("val2017", NUM_VAL, VAL_STREAM),
    ):
        source = SyntheticPanoptic(
            count,
            seed=5,
            min_size=SIZE_RANGE[0],
            max_size=SIZE_RANGE[1],
            crowd_prob=CROWD_PROB,
            stream=stream,
        )
        samples = [source[i] for i in range(count)]
        for sample in samples:  # user-style ids: large and unrelated to the index
            sample.image_id = 9000 + int(sample.image_id) * 7
        write_coco_panoptic(samples, root, split, source.categories, image_format="png")
    return root


@pytest.fixture(scope="module")
def trained_run(user_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    args = [
        "train",
        "--config",
        "tiny",
        "--data-root",
        str(user_dataset),
        "--output-dir",
        str(run),
        "--no-progress",
    ]
    for item in TRAIN_OVERRIDES:
        args += ["--set", item]
    assert main(args) == 0
    return run


def test_dataset_is_user_like(user_dataset: Path) -> None:
    val = CocoPanopticDataset(user_dataset, "val2017")
    ids = [c.id for c in val.categories.categories]
    assert ids == [1, 3, 7, 12, 20, 31, 44]  # non-contiguous
    samples = [val[i] for i in range(len(val))]
    assert any(s.iscrowd for sample in samples for s in sample.segments), "needs crowd segments"
    assert any((sample.panoptic == 0).any() for sample in samples), "needs void pixels"
    assert val.image_ids == [9000, 9007, 9014]


def _split_scores(metrics: dict) -> dict[str, tuple[float, float, float]]:
    return {
        k: (metrics[k]["pq"], metrics[k]["sq"], metrics[k]["rq"])
        for k in ("all", "things", "stuff")
    }


def test_train_evaluate_files_and_hotcoco_agree(
    user_dataset: Path, trained_run: Path, tmp_path: Path
) -> None:
    checkpoint = trained_run / "checkpoints" / "best"
    assert checkpoint.is_dir()
    preds = tmp_path / "preds"
    model_json = tmp_path / "model_metrics.json"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--data-root",
                str(user_dataset),
                "--save-predictions",
                str(preds),
                "--output",
                str(model_json),
            ]
        )
        == 0
    )
    _, gt_json, gt_dir = standard_paths(user_dataset, "val2017")
    pred_json, pred_dir = preds / "predictions.json", preds / "panoptic"

    # the saved predictions use the GT image ids and name their PNGs after the GT images
    saved = json.loads(pred_json.read_text())
    gt = json.loads(gt_json.read_text())
    assert [a["image_id"] for a in saved["annotations"]] == [
        a["image_id"] for a in gt["annotations"]
    ]
    assert [a["file_name"] for a in saved["annotations"]] == [
        a["file_name"] for a in gt["annotations"]
    ]
    predicted = [s for a in saved["annotations"] for s in a["segments_info"]]
    assert predicted, "opened-up thresholds must predict segments"
    assert {s["category_id"] for s in predicted} <= {1, 3, 7, 12, 20, 31, 44}
    for ann in saved["annotations"]:  # every JSON segment is in its PNG and vice versa
        ids = set(np.unique(read_panoptic_png(pred_dir / ann["file_name"])).tolist()) - {0}
        assert ids == {s["id"] for s in ann["segments_info"]}

    files_json = tmp_path / "files_metrics.json"
    assert (
        main(
            [
                "evaluate",
                "--gt-json",
                str(gt_json),
                "--gt-dir",
                str(gt_dir),
                "--pred-json",
                str(pred_json),
                "--pred-dir",
                str(pred_dir),
                "--output",
                str(files_json),
            ]
        )
        == 0
    )

    from hotcoco.panoptic import pq_compute

    official = pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))
    from_model = json.loads(model_json.read_text())
    from_files = json.loads(files_json.read_text())
    assert from_model["images"] == NUM_VAL
    expected = {
        "all": tuple(official["All"][k] for k in ("pq", "sq", "rq")),
        "things": tuple(official["Things"][k] for k in ("pq", "sq", "rq")),
        "stuff": tuple(official["Stuff"][k] for k in ("pq", "sq", "rq")),
    }
    for name, scores in (
        ("model mode", _split_scores(from_model)),
        ("files mode", _split_scores(from_files)),
    ):
        for split, values in scores.items():
            np.testing.assert_allclose(
                values, expected[split], rtol=0, atol=TOLERANCE, err_msg=f"{name} {split}"
            )

    # the two evaluations of ours also agree on every per-class count (TP, FP, FN)
    def counts(m: dict) -> dict:
        return {c: (v["tp"], v["fp"], v["fn"]) for c, v in m["per_class"].items()}

    assert counts(from_model) == counts(from_files)
    assert sum(fp for _, fp, _ in counts(from_model).values()) > 0


SHARDED_EVAL = """
import json, sys
import torch.distributed as dist
from maskconver.data.coco_panoptic import CocoPanopticDataset
from maskconver.engine.checkpoint import load_model
from maskconver.engine.distributed import init_distributed
from maskconver.engine.evaluate import evaluate_model

info = init_distributed("cpu")
model, cfg, categories, num_classes = load_model(sys.argv[1])
dataset = CocoPanopticDataset(sys.argv[2], "val2017")
metrics = evaluate_model(model, dataset, cfg=cfg, categories=categories, num_classes=num_classes,
                         batch_size=1, progress=False)
with open(f"{sys.argv[3]}.rank{info.rank}.json", "w") as f:
    json.dump(metrics, f)
dist.destroy_process_group()
"""


def test_sharded_evaluation_over_two_processes_equals_one(
    user_dataset: Path, trained_run: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    from maskconver.engine.checkpoint import load_model
    from maskconver.engine.evaluate import evaluate_model

    checkpoint = trained_run / "checkpoints" / "best"
    model, cfg, categories, num_classes = load_model(checkpoint)
    single = evaluate_model(
        model,
        CocoPanopticDataset(user_dataset, "val2017"),
        cfg=cfg,
        categories=categories,
        num_classes=num_classes,
        progress=False,
    )
    script = tmp_path / "sharded_eval.py"
    script.write_text(SHARDED_EVAL)
    # 3 images over 2 ranks: rank 0 takes images 0 and 2, rank 1 image 1; the states are summed
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(checkpoint),
            str(user_dataset),
            str(tmp_path / "metrics"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        sharded = json.loads((tmp_path / f"metrics.rank{rank}.json").read_text())
        assert sharded["images"] == NUM_VAL
        # counts are integers; IoU sums may differ in the last bit (another summation order)
        for category, row in single["per_class"].items():
            other = sharded["per_class"][category]
            assert [other[k] for k in ("tp", "fp", "fn")] == [row[k] for k in ("tp", "fp", "fn")]
            np.testing.assert_allclose(
                [other[k] for k in ("pq", "sq", "rq")],
                [row[k] for k in ("pq", "sq", "rq")],
                rtol=0,
                atol=TOLERANCE,
            )
        for split, values in _split_scores(sharded).items():
            np.testing.assert_allclose(values, _split_scores(single)[split], rtol=0, atol=TOLERANCE)


def test_evaluate_checkpoint_errors_exit_2(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert main(["evaluate", "--checkpoint", str(missing), "--data-root", str(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err
    checkpoint = trained_run / "checkpoints" / "best"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(tmp_path)]) == 2
    assert "val2017" in capsys.readouterr().err


def test_predict_writes_png_json_overlay_and_skips_bad_files(
    user_dataset: Path, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    images = sorted((user_dataset / "val2017").iterdir())
    for image in images:
        (inputs / image.name).write_bytes(image.read_bytes())
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (inputs / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "predictions"
    code = main(
        [
            "predict",
            "--checkpoint",
            str(trained_run / "checkpoints" / "best"),
            "--input",
            str(inputs),
            "--output",
            str(out),
            "--batch-size",
            "2",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "1 image(s) could not be read" in err
    payload = json.loads((out / "predictions.json").read_text())
    stems = [image.stem for image in images]
    assert [a["image_id"] for a in payload["annotations"]] == stems
    assert [c["id"] for c in payload["categories"]] == [1, 3, 7, 12, 20, 31, 44]
    for image, ann in zip(images, payload["annotations"]):
        ids = read_panoptic_png(out / f"{image.stem}.png")
        from PIL import Image

        with Image.open(image) as im:
            assert ids.shape == (im.height, im.width)
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in ann["segments_info"]}
        assert (out / f"{image.stem}_overlay.jpg").is_file()

    # only unreadable inputs: nothing succeeded -> non-zero exit
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"junk")
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(trained_run / "checkpoints" / "best"),
                "--input",
                str(only_bad),
                "--output",
                str(tmp_path / "p2"),
                "--no-overlay",
            ]
        )
        == 1
    )


def test_quickstart_end_to_end_with_a_tiny_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    args = ["quickstart", "--output-dir", str(out), "--no-progress", "--threads", "1"]
    for item in [
        "train.max_steps=2",
        "train.batch_size=2",
        "data.synthetic_val=3",
        "data.synthetic_min_size=48",
        "data.synthetic_max_size=64",
        "augment.input_size=[64, 64]",
        "eval.input_size=64",
    ]:
        args += ["--set", item]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "quickstart finished" in printed and "things" in printed and "stuff" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2
    assert metrics["eval"]["images"] == 3
    assert metrics["files_check"]["agrees"] is True
    for split in ("all", "things", "stuff"):
        assert 0.0 <= metrics["pq"][split]["pq"] <= 1.0
    assert (out / "training_curves.png").is_file()
    assert (out / "val_predictions" / "predictions.json").is_file()
    assert len(list((out / "val_predictions" / "panoptic").glob("*.png"))) == 3
    assert (
        len(list((out / "pictures").glob("*_gt_vs_pred.jpg")))
        == len(list((out / "heldout").glob("*.png")))
        > 0
    )
    # running again replaces the earlier quickstart run
    (out / "pictures" / "stale.jpg").write_bytes(b"old")
    assert main(args) == 0
    assert not (out / "pictures" / "stale.jpg").exists()
    # another non-empty folder is refused (exit 2) unless it is a maskconver run and --overwrite
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    other_args = [*args[:2], str(other), *args[3:]]
    assert main(other_args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*other_args, "--overwrite"]) == 2
    assert (other / "notes.txt").read_text() == "keep me"


def test_calibration_plan_picks_the_fastest_setting() -> None:
    from maskconver.engine.budget import Calibration, budget_steps

    # idle: 2 threads = 0.10 + 0.04 = 0.14 s beats 1 thread = 0.16 + 0.04 = 0.20 s
    assert Calibration(
        data=0.04, compute={1: 0.16, 2: 0.10}, eval_image=0.01
    ).plan() == pytest.approx((2, 0, 0.14))
    # loaded: 2 threads spin (12 s); 1 thread = 0.5 + 0.04 = 0.54 s, plus an uncredited worker
    assert Calibration(
        data=0.04, compute={1: 0.5, 2: 12.0}, eval_image=0.01
    ).plan() == pytest.approx((1, 1, 0.54))
    # a single timed count is taken as is: 2 + 1 = 3 s
    assert Calibration(data=1.0, compute={2: 2.0}, eval_image=0.01).plan() == pytest.approx(
        (2, 0, 3.0)
    )
    # 8 minutes = 480 s, minus 4 evaluations of 5 s = 460 s, times the 0.92 safety = 423.2 s,
    # at 0.2 s per step = 2116 steps
    assert budget_steps(8.0, 0.2, 5.0) == 2116
    assert budget_steps(0.01, 1.0, 5.0) == 20  # never below MIN_STEPS
