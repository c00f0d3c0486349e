"""``maskconver train`` smoke tests through the real command line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from maskconver.cli import main
from maskconver.engine.checkpoint import load_model
from maskconver.engine.logging import read_metrics

SMALL = [
    "--set",
    "train.max_steps=2",
    "--set",
    "train.batch_size=2",
    "--set",
    "train.log_every=1",
    "--set",
    "train.max_eval_images=1",
    "--set",
    "augment.input_size=[64,64]",
    "--set",
    "data.synthetic_train=4",
    "--set",
    "data.synthetic_val=1",
    "--set",
    "data.synthetic_min_size=64",
    "--set",
    "data.synthetic_max_size=72",
    "--set",
    "eval.input_size=64",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_smoke_writes_run_and_loadable_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code = main(["train", "--config", "tiny", "--output-dir", str(run), "--no-progress", *SMALL])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads(out[out.index("{\n") :])  # the JSON summary follows the log lines
    train_lines = [line for line in out.splitlines() if line.startswith("[train step")]
    assert len(train_lines) == 2  # train.log_every=1
    for line in train_lines:  # e.g. "[train step 1] lr ...  elapsed 2s  eta 2s"
        assert re.search(r"  elapsed (\d+h)?(\d+m)?\d+s  eta (\d+h)?(\d+m)?\d+s", line), line
    assert train_lines[-1].endswith("  eta 0s")  # the last step: nothing left
    assert summary["steps"] == 2 and summary["images_per_s"] > 0
    assert set(summary["final_losses"]) >= {"loss", "loss_center", "loss_bce", "loss_dice"}
    assert (run / "config.yaml").is_file()
    assert (run / "training_curves.png").stat().st_size > 0  # curves drawn at the end of train()
    records = read_metrics(run)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]
    first, last = (r for r in records if r["kind"] == "train")
    assert 0 < first["elapsed_s"] <= last["elapsed_s"] and last["eta_s"] == 0
    assert first["eta_s"] == pytest.approx(first["elapsed_s"])  # 1 step done, 1 to go
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2]
    model, cfg, categories, num_classes = load_model(run / "checkpoints" / "step_000002")
    assert cfg.train.max_steps == 2 and num_classes == len(categories)
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, 64, 64))
    assert outputs.mask_logits.shape[1] == cfg.model.num_proposals

    # --resume on a finished run trains nothing more and succeeds
    code = main(
        ["train", "--config", "tiny", "--output-dir", str(run), "--resume", "--no-progress", *SMALL]
    )
    assert code == 0


def test_bad_config_and_data_give_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["train", "--config", "tiny", "--output-dir", str(tmp_path), "--set", "train.max_stpes=2"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "train.max_stpes" in err and "max_steps" in err  # names key + hint
    code = main(["train", "--config", "no_such_preset", "--output-dir", str(tmp_path)])
    assert code == 2 and "no_such_preset" in capsys.readouterr().err
    missing = tmp_path / "no_coco_here"
    code = main(
        [
            "train",
            "--config",
            "tiny",
            "--output-dir",
            str(tmp_path / "r"),
            "--data-root",
            str(missing),
            *SMALL,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no_coco_here" in err and len(err.strip().splitlines()) == 1


def test_threads_option_sets_torch_threads_and_refuses_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    try:
        target = 1 if before != 1 else 2
        argv = ["train", "--config", "tiny", "--output-dir", str(tmp_path / "run"), "--no-progress"]
        assert main([*argv, "--threads", str(target), *SMALL]) == 0
        assert torch.get_num_threads() == target
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:  # a usage error: one line, exit 2
            main([*argv[:-2], str(tmp_path / "other"), "--threads", "0", *SMALL])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "argument --threads: must be an integer >= 1, got 0" in err
        assert len(err.splitlines()) == 1 and not (tmp_path / "other").exists()
    finally:
        torch.set_num_threads(before)


def test_dataset_without_the_val_split_names_it_and_the_splits_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from maskconver.data.synthetic import write_synthetic_dataset

    root = tmp_path / "coco"
    write_synthetic_dataset(root, train=2, val=1, seed=0, min_size=64, max_size=72, progress=False)
    # the validation split under another name: no val2017 folder, no panoptic_val2017.json
    (root / "val2017").rename(root / "validation")
    for suffix in ("", ".json"):
        old = root / "annotations" / f"panoptic_val2017{suffix}"
        old.rename(old.with_name(f"panoptic_validation{suffix}"))
    argv = ["train", "--config", "tiny", "--no-progress", "--data-root", str(root), *SMALL]
    run = tmp_path / "run"
    assert main([*argv, "--output-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("maskconver train: error: ")
    assert f"{root / 'val2017'}/" in err and str(root / "annotations/panoptic_val2017.json") in err
    assert "(panoptic_*.json) are train2017, validation" in err
    assert "--set data.val_split=NAME" in err and not run.exists()
    # the hint works: the split named as it says trains
    fixed = [*argv, "--output-dir", str(run), "--set", "data.val_split=validation"]
    assert main([*fixed, "train.max_steps=1"]) == 0
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "eval"] == [1]
