"""Fault injection: bad input and crashes give one-line errors, lose nothing, leave nothing.

Each case asserts the exit code, that the message names the file or key, and what is (not) left
on disk. The cases that already held before (pickle payloads refused, interrupted checkpoint
writes, exact resume) are here too, so they stay fixed.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from maskconver.cli import main
from maskconver.config import load_config
from maskconver.data.synthetic import write_synthetic_dataset
from maskconver.engine.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint

SMALL = [
    "train.batch_size=2",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.max_eval_images=2",
    "augment.input_size=[64, 64]",
    "eval.input_size=64",
    "eval.batch_size=2",
    "data.synthetic_train=6",
    "data.synthetic_val=2",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(out: Path, *extra: str, data_root: Path | None = None, resume: bool = False) -> int:
    argv = [
        "train",
        "--config",
        "tiny",
        "--output-dir",
        str(out),
        *(["--resume"] if resume else []),
        "--no-progress",
        "--set",
        *SMALL,
        *extra,
    ]
    if data_root is not None:
        argv += ["--data-root", str(data_root)]
    return main(argv)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("faults_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # untrained proposals still become segments: MaskFormer merge with zero thresholds
        assert (
            _train(
                run,
                "train.max_steps=2",
                "model.maskconver.merge.mode=maskformer",
                "model.maskconver.merge.mask_threshold=0.0",
                "model.maskconver.merge.min_area=0",
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    found = latest_checkpoint(run)
    assert found is not None
    return found


def _images(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            folder / f"im{i}.png"
        )
    return folder


# ----------------------------------------------------------------------------------------------
# predict: consistent, never over someone's files, one folder per run


def _predict(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--input",
            str(inputs),
            "--output",
            str(out),
            "--threads",
            "1",
            *extra,
        ]
    )


def _listed(out: Path) -> set[str]:
    data = json.loads((out / "predictions.json").read_text())
    return {a["file_name"] for a in data["annotations"]}


def test_a_second_predict_into_a_run_is_refused_then_replaced_cleanly(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, out = _images(tmp_path / "in"), tmp_path / "out"
    assert _predict(checkpoint, inputs, out) == 0
    first = _listed(out)
    assert first == {"im0.png", "im1.png", "im2.png"}
    assert _predict(checkpoint, inputs, out) == 2
    assert "--overwrite" in capsys.readouterr().err
    # --overwrite with fewer inputs: the earlier run's files go, the JSON lists exactly the new
    (inputs / "im2.png").unlink()
    assert _predict(checkpoint, inputs, out, "--overwrite") == 0
    assert _listed(out) == {"im0.png", "im1.png"}
    assert not (out / "im2.png").exists() and not (out / "im2_overlay.jpg").exists()
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == _listed(out)  # the JSON and the folder agree
    assert not (out / ".maskconver-predict.lock").exists()


def test_predict_never_writes_over_its_inputs_or_other_files(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _images(tmp_path / "in")
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    assert _predict(checkpoint, inputs, inputs) == 2  # outputs <stem>.png == the inputs
    assert "input image" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "im0.png").write_bytes(b"mine")
    assert _predict(checkpoint, inputs, other, "--overwrite") == 2
    assert "not from an earlier predict run" in capsys.readouterr().err
    assert (other / "im0.png").read_bytes() == b"mine"


def test_a_concurrent_predict_is_refused_a_stale_lock_is_not(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, out = _images(tmp_path / "in", 1), tmp_path / "out"
    out.mkdir()
    (out / ".maskconver-predict.lock").write_text(str(os.getpid()))  # a live process
    assert _predict(checkpoint, inputs, out) == 2
    assert f"pid {os.getpid()}" in capsys.readouterr().err
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (out / ".maskconver-predict.lock").write_text(dead)
    assert _predict(checkpoint, inputs, out) == 0


def test_predict_options_ids_scores_and_unreadable_images(checkpoint: Path, tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in", 2)
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    info = tmp_path / "images.json"
    info.write_text(
        json.dumps(
            {
                "images": [
                    {"id": 7, "file_name": "im0.png"},
                    {"id": 9, "file_name": "im1.png"},
                    {"id": 11, "file_name": "broken.png"},
                ]
            }
        )
    )
    out = tmp_path / "out"
    assert (
        _predict(
            checkpoint,
            inputs,
            out,
            "--image-info",
            str(info),
            "--score-threshold",
            "0.0",
            "--overlap-threshold",
            "0.0",
        )
        == 0
    )
    data = json.loads((out / "predictions.json").read_text())
    assert sorted(im["id"] for im in data["images"]) == [7, 9]
    assert all((inputs / im["file_name"]).is_file() for im in data["images"])  # names exist
    assert all((out / a["file_name"]).is_file() for a in data["annotations"])
    segments = [s for a in data["annotations"] for s in a["segments_info"]]
    assert segments and all("score" in s for s in segments)
    assert oct((out / "predictions.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_images_over_the_decompression_bomb_limit_are_skipped(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs = _images(tmp_path / "in", 1)
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(inputs / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2 x 1000: a "bomb"
    assert _predict(checkpoint, inputs, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "huge.png" in err and "decompression-bomb" in err
    assert _listed(tmp_path / "out") == {"im0.png"}


# ----------------------------------------------------------------------------------------------
# one error path: one line, exit 2, the file or key named


def test_a_broken_checkpoint_is_one_line_for_predict_and_evaluate(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "ckpt"
    shutil.copytree(checkpoint, broken)
    (broken / "meta.json").write_text("{ not json")
    inputs = _images(tmp_path / "in", 1)
    root = tmp_path / "data"
    write_synthetic_dataset(root, train=0, val=2, seed=0, progress=False)
    for argv in (
        [
            "predict",
            "--checkpoint",
            str(broken),
            "--input",
            str(inputs),
            "--output",
            str(tmp_path / "o"),
        ],
        ["evaluate", "--checkpoint", str(broken), "--data-root", str(root)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "meta.json" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.ckpt_every=0", "train.ckpt_every"),
        ("train.log_every=0", "train.log_every"),
        ("train.max_steps=0", "train.max_steps"),
        ("train.lr=-0.1", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("train.ema_decay=1.5", "train.ema_decay"),
        ("data.num_workers=-1", "data.num_workers"),
        ("augment.input_size=[0, 0]", "augment.input_size"),
        ("eval.input_size=0", "eval.input_size"),
        ("model.num_proposals=100000", "model.num_proposals"),
    ],
)
def test_bad_config_values_are_refused_before_anything_runs(
    tmp_path: Path, override: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train(tmp_path / "run", override) == 2
    err = capsys.readouterr().err.strip()
    assert key in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing was written


def test_yaml_1_1_exponents_are_numbers() -> None:
    assert load_config("tiny", ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)


def _coco_root(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    write_synthetic_dataset(root, train=4, val=2, seed=0, min_size=64, max_size=80, progress=False)
    return root


def _edit_json(path: Path, edit: Any) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        (
            "string category id",
            lambda d: d["annotations"][0]["segments_info"][0].update(category_id="20"),
            "must be an integer",
        ),
        (
            "numeric file_name",
            lambda d: d["images"][0].update(file_name=5),
            "'file_name' must be a non-empty string",
        ),
        (
            "list image id",
            lambda d: d["images"][0].update(id=[1]),
            "must be an integer or a string",
        ),
        (
            "unknown category",
            lambda d: d["annotations"][0]["segments_info"][0].update(category_id=999),
            "unknown category id 999",
        ),
    ],
)
def test_dataset_faults_name_the_file(
    tmp_path: Path, name: str, edit: Any, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _coco_root(tmp_path)
    _edit_json(root / "annotations" / "panoptic_train2017.json", edit)
    assert _train(tmp_path / "run", "train.max_steps=1", data_root=root) == 2
    err = capsys.readouterr().err
    assert message in err and "panoptic_train2017.json" in err, err


def test_a_non_utf8_json_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _coco_root(tmp_path)
    path = root / "annotations" / "panoptic_val2017.json"
    path.write_bytes(path.read_bytes().replace(b'"name"', '"näme"'.encode("latin-1")))
    assert _train(tmp_path / "run", "train.max_steps=1", data_root=root) == 2
    assert "panoptic_val2017.json is not UTF-8" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# training: no lost work, no leftovers, no duplicates


def test_a_bad_validation_image_is_found_before_step_1_or_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _coco_root(tmp_path)
    victim = sorted((root / "val2017").iterdir())[0]
    victim.write_bytes(b"corrupt")
    assert _train(tmp_path / "strict", "train.max_steps=2", data_root=root) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "skip_bad_samples" in err
    assert latest_checkpoint(tmp_path / "strict") is None  # failed before any step
    assert (
        _train(
            tmp_path / "lenient", "train.max_steps=2", "data.skip_bad_samples=true", data_root=root
        )
        == 0
    )
    ckpt = latest_checkpoint(tmp_path / "lenient")
    assert ckpt is not None
    metrics = load_checkpoint(ckpt).metrics
    assert metrics["skipped"] == 1 and metrics["images"] == 1


def test_a_failing_final_evaluation_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import maskconver.engine.evaluate as evaluate_module

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(evaluate_module, "evaluate_model", broken)
    from maskconver.engine.train import train

    summary = train(load_config("tiny", [*SMALL, "train.max_steps=2"]), tmp_path, progress=False)
    assert summary["checkpoint"] is not None and Path(summary["checkpoint"]).is_dir()
    assert summary["pq"] is None
    out = capsys.readouterr().out
    assert "evaluation at step 2 failed, the checkpoint is kept: evaluation exploded" in out


def test_a_refused_resume_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train(tmp_path, "train.max_steps=1") == 0
    config_before = (tmp_path / "config.yaml").read_text()
    metrics_before = (tmp_path / "metrics.jsonl").read_text()
    code = _train(tmp_path, "train.max_steps=2", "model.maskconver.embedding_dim=16", resume=True)
    assert code == 2
    err = capsys.readouterr().err
    assert "model.maskconver.embedding_dim" in err and "nothing was written" in err
    assert (tmp_path / "config.yaml").read_text() == config_before
    assert (tmp_path / "metrics.jsonl").read_text() == metrics_before


def test_leftovers_and_duplicate_log_lines_after_a_crash(tmp_path: Path) -> None:
    assert _train(tmp_path, "train.max_steps=4", "train.ckpt_every=2") == 0
    ckpts = tmp_path / "checkpoints"
    # a crash left: a half-written checkpoint of a dead process, log lines past the last
    # checkpoint (as if steps 5-6 ran and were lost), and no best/ between its two renames
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (ckpts / f"step_000006.tmp-{dead}").mkdir()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        for step in (5, 6):
            f.write(json.dumps({"kind": "train", "step": step, "loss": 1.0}) + "\n")
        f.write('{"kind": "train", "st')  # a line cut by the crash
    os.replace(ckpts / "best", ckpts / f"best.old-{dead}")
    # resume from step 4 with a longer schedule
    code = _train(tmp_path, "train.max_steps=6", "train.ckpt_every=2", resume=True)
    assert code == 0
    assert not list(ckpts.glob("*.tmp-*"))
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "train"
    ]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4, 5, 6]  # no duplicates
    assert (ckpts / "best" / "meta.json").is_file()


def test_skipped_samples_are_counted_across_loader_workers(tmp_path: Path) -> None:
    root = _coco_root(tmp_path)
    victim = sorted((root / "annotations" / "panoptic_train2017").iterdir())[0]
    victim.write_bytes(b"not a png")  # found only when read (the up-front check is cheap)
    from maskconver.engine.train import train

    cfg = load_config(
        "tiny", [*SMALL, "train.max_steps=6", "data.skip_bad_samples=true", "data.num_workers=2"]
    )
    summary = train(cfg, tmp_path / "run", data_root=str(root), progress=False)
    assert summary["skipped_samples"] >= 1


def test_a_full_disk_is_a_clear_checkpoint_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import maskconver.engine.checkpoint as ck
    from maskconver.build import build_model
    from maskconver.data.synthetic import synthetic_categories

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", full)
    cats = synthetic_categories()
    cfg = load_config("tiny")
    with pytest.raises(CheckpointError, match="disk looks full"):
        ck.save_checkpoint(
            tmp_path,
            model=build_model(cfg.model, 7),
            ema=None,
            optimizer=None,
            step=1,
            config=cfg,
            categories=cats,
            num_classes=cats.num_classes,
        )
    assert list(tmp_path.iterdir()) == []


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch /tmp/maskconver-pwned",))


def test_pickle_payloads_in_a_checkpoint_never_run(checkpoint: Path, tmp_path: Path) -> None:
    hostile = tmp_path / "ckpt"
    shutil.copytree(checkpoint, hostile)
    (hostile / "trainer.pt").write_bytes(pickle.dumps({"step": _Payload()}))
    Path("/tmp/maskconver-pwned").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="trainer.pt"):
        load_checkpoint(hostile)
    assert not Path("/tmp/maskconver-pwned").exists()


def test_a_checkpoint_moved_away_from_its_weight_file_still_predicts(
    checkpoint: Path, tmp_path: Path
) -> None:
    """Checkpoints are self-contained: the backbone weight file is never read again."""
    from safetensors.torch import save_file

    from maskconver.build import build_backbone
    from maskconver.engine.checkpoint import load_model
    from maskconver.predictor import Predictor

    weights = tmp_path / "backbone.safetensors"
    cfg = load_config("tiny")
    save_file(
        {k: v.contiguous() for k, v in build_backbone(cfg.model).state_dict().items()}, str(weights)
    )
    run = tmp_path / "run"
    assert _train(run, "train.max_steps=1", f"model.backbone.weights={weights}") == 0
    moved = tmp_path / "elsewhere" / "ckpt"
    shutil.copytree(latest_checkpoint(run), moved)  # type: ignore[arg-type]
    weights.unlink()
    shutil.rmtree(run)
    load_model(moved)
    assert Predictor.from_checkpoint(moved)(np.zeros((30, 40, 3), np.uint8)).panoptic.shape == (
        30,
        40,
    )


# ----------------------------------------------------------------------------------------------
# bounded memory


def test_the_merge_canvas_is_capped_with_a_warning() -> None:
    from maskconver.meta.maskconver.outputs import MaskConverOutput
    from maskconver.meta.maskconver.postprocess import PanopticPostProcessor

    logits = torch.full((1, 2, 8, 8), -5.0)
    logits[0, 0, :, :4] = 5.0  # proposal 0: the left half
    logits[0, 1, :, 4:] = 5.0  # proposal 1: the right half
    out = MaskConverOutput(
        (),
        logits,
        torch.tensor([[0.9, 0.8]]),
        torch.tensor([[0, 1]]),
        torch.zeros(1, 2, dtype=torch.int64),
    )
    kw = {"class_to_category": [1, 2], "is_thing_class": [True, False], "min_area": 0}
    exact = PanopticPostProcessor(**kw)(out, [(8, 8)], [(400, 600)], (8, 8))[0]  # type: ignore[arg-type]
    capped_pp = PanopticPostProcessor(**kw, max_canvas_pixels=6000)  # type: ignore[arg-type]
    with pytest.warns(
        UserWarning, match="400x600 image exceeds postprocess.max_canvas_pixels=6000"
    ):
        capped = capped_pp(out, [(8, 8)], [(400, 600)], (8, 8))[0]
    assert capped.panoptic.shape == (400, 600)
    assert [s.category_id for s in capped.segments] == [s.category_id for s in exact.segments]
    assert (capped.panoptic == exact.panoptic).mean() > 0.99
    assert sum(s.area for s in capped.segments) == 400 * 600


@pytest.mark.slow
def test_predict_on_a_12_megapixel_photo_stays_under_1_5_gb(tmp_path: Path) -> None:
    """mobilenet_mh_640 (untrained: all 50 proposals above the threshold, the worst case)."""
    from maskconver.build import build_model
    from maskconver.data.types import Category, CategorySet
    from maskconver.engine.checkpoint import save_checkpoint

    cfg = load_config("mobilenet_mh_640")
    cats = CategorySet([Category(i, f"c{i}", i % 2 == 0) for i in range(1, 201)], "raw_ids")
    ckpt = save_checkpoint(
        tmp_path / "ckpt",
        model=build_model(cfg.model, 201),
        ema=None,
        optimizer=None,
        step=0,
        config=cfg,
        categories=cats,
        num_classes=201,
    )
    photo = tmp_path / "in" / "photo.jpg"
    photo.parent.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(photo)
    code = (
        "import resource, sys\n"
        "from maskconver.cli import main\n"
        f"rc = main(['predict', '--checkpoint', {str(ckpt)!r}, '--input', {str(photo)!r}, "
        f"'--output', {str(tmp_path / 'out')!r}, '--threads', '2'])\n"
        "print('RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_kb = int(proc.stdout.split("RSS_KB")[1].split()[0])
    print(f"12 MP predict peak RSS: {peak_kb / 1024:.0f} MB")
    assert peak_kb < 1.5 * 1024 * 1024
