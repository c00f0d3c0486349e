"""Issue 22, class 5: no input is skipped without a word.

A dangling or looping symlink among predict's inputs is named and counted in the summary;
``--image-info`` sizes that disagree with the images are refused; an empty validation split is
an error (not a PQ of 0 with exit 0); a failed final evaluation after training exits non-zero
and says the checkpoint is kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ONE_STEP_RUN, write_random_images

from maskconver.cli import main
from maskconver.data.synthetic import write_synthetic_dataset
from maskconver.engine.checkpoint import latest_checkpoint
from maskconver.errors import EXIT_BAD_INPUT, EXIT_FAILED

SMALL = ONE_STEP_RUN


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(out: Path, *extra: str) -> int:
    argv = ["train", "--config", "tiny", "--output-dir", str(out), "--no-progress"]
    return main([*argv, *extra, "--set", *SMALL])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("skips_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _train(run) == 0
    finally:
        torch.set_num_threads(threads)
    found = latest_checkpoint(run)
    assert found is not None
    return found


def _predict(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> int:
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(inputs)]
    return main([*argv, "--output", str(out), "--threads", "1", "--no-overlay", *extra])


def test_dangling_and_looping_symlinks_are_named_and_counted(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = write_random_images(tmp_path / "in", 2)
    os.symlink(tmp_path / "gone.png", inputs / "dangling.png")
    os.symlink(inputs / "loop.png", inputs / "loop.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    assert _predict(checkpoint, inputs, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert f"skipped {inputs / 'dangling.png'}: a dangling or looping symlink" in err
    assert f"skipped {inputs / 'loop.png'}: a dangling or looping symlink" in err
    summary = [line for line in err.splitlines() if "input(s) skipped" in line]
    assert summary == [
        "3 input(s) skipped: 1 image(s) could not be read, 2 folder entr(ies) were not files "
        "(each named above)"
    ]


def test_image_info_sizes_that_disagree_are_refused(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = write_random_images(tmp_path / "in", 2)
    info = tmp_path / "images.json"
    images = [
        {"id": 1, "file_name": "im0.png", "height": 40, "width": 50},
        {"id": 2, "file_name": "im1.png", "height": 50, "width": 40},  # swapped
    ]
    info.write_text(json.dumps({"images": images}))
    out = tmp_path / "out"
    assert _predict(checkpoint, inputs, out, "--image-info", str(info)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"--image-info {info} disagrees" in err and "im1.png is 40x50 but listed as 50x40" in err
    assert not (out / "predictions.json").exists()


@pytest.fixture(scope="module")
def empty_val_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("empty_val")
    write_synthetic_dataset(root, train=2, val=1, seed=0, min_size=48, max_size=64, progress=False)
    path = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(path.read_text())
    data["images"], data["annotations"] = [], []
    path.write_text(json.dumps(data))
    return root


def test_an_empty_validation_split_is_an_error_for_evaluate(
    checkpoint: Path, empty_val_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(empty_val_root)]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("maskconver evaluate: error: nothing to evaluate")
    assert "panoptic_val2017.json has no images" in err


def test_an_empty_validation_split_refuses_training_before_step_1(
    empty_val_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert _train(out, "--data-root", str(empty_val_root)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert "val split has no images" in err and "panoptic_val2017.json" in err, err
    assert latest_checkpoint(out) is None


def test_a_failed_final_evaluation_exits_non_zero_and_keeps_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import maskconver.engine.evaluate as evaluate

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("the validation data went away")

    monkeypatch.setattr(evaluate, "evaluate_model", broken)
    out = tmp_path / "run"
    assert _train(out) == EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()[-1]
    kept = latest_checkpoint(out)
    assert kept is not None and (kept / "model.safetensors").is_file()
    assert err.startswith("maskconver train: error: the final evaluation failed"), err
    assert "the validation data went away" in err and f"the checkpoint {kept} is kept" in err
