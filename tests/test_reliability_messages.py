"""Issue 22, class 8 and the evaluate items: specific one-line messages, not "unexpected error".

Malformed checkpoint ``meta.json`` categories, ONNX metadata whose categories do not cover its
outputs, a DataLoader worker's exception (its own message, no traceback text), a truncated JPEG
in the validation split (found up front by decoding), ``evaluate`` on a root without the split
(named, with the ``--set data.val_split=...`` hint) and ``evaluate --set``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ONE_STEP_RUN
from torch.utils.data import DataLoader, Dataset

from maskconver.cli import main
from maskconver.config import load_config
from maskconver.data.coco_panoptic import CocoPanopticDataset, DatasetError
from maskconver.data.synthetic import write_synthetic_dataset
from maskconver.data.types import Category, CategorySet
from maskconver.engine.checkpoint import latest_checkpoint
from maskconver.engine.data import check_split
from maskconver.errors import EXIT_BAD_INPUT, one_line

SMALL = ONE_STEP_RUN


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("messages_run")
    argv = ["train", "--config", "tiny", "--output-dir", str(run), "--no-progress"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*argv, "--set", *SMALL]) == 0
    finally:
        torch.set_num_threads(threads)
    found = latest_checkpoint(run)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("messages_root")
    write_synthetic_dataset(out, train=2, val=2, seed=0, min_size=48, max_size=64, progress=False)
    return out


@pytest.mark.parametrize("categories", [[1, 2], "things", {"id": 1}])
def test_malformed_meta_json_categories_name_the_file(
    checkpoint: Path,
    tmp_path: Path,
    categories: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "ckpt"
    shutil.copytree(checkpoint, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["categories"] = categories
    (bad / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "in").mkdir()
    argv = ["predict", "--checkpoint", str(bad), "--input", str(tmp_path / "in")]
    assert main([*argv, "--output", str(tmp_path / "out")]) in (EXIT_BAD_INPUT,)
    argv = ["evaluate", "--checkpoint", str(bad), "--data-root", str(tmp_path)]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "unexpected error" not in err
    assert f"{bad / 'meta.json'}" in err and "'categories' must be a list" in err


def test_onnx_metadata_with_fewer_categories_than_outputs_is_refused(tmp_path: Path) -> None:
    from maskconver.export.graph import ExportError
    from maskconver.export.onnx import OnnxMetadata
    from maskconver.export.runtime import check_categories

    cats = CategorySet(
        [Category(id=1, name="a", isthing=True), Category(id=2, name="b", isthing=False)]
    )
    metadata = OnnxMetadata(
        config=load_config("tiny"),
        categories=cats,
        num_classes=5,  # the graph's class channels
        input_size=None,
        outputs=[],
        quantization="none",
        version="0",
    )
    with pytest.raises(ExportError, match=r"m\.onnx: its metadata lists 2 categories .* 5 classes"):
        check_categories(metadata, tmp_path / "m.onnx")
    check_categories(dataclasses.replace(metadata, num_classes=2), tmp_path / "m.onnx")
    wider = dataclasses.replace(metadata.config.model, num_classes=5)  # set on purpose: fine
    check_categories(
        dataclasses.replace(metadata, config=dataclasses.replace(metadata.config, model=wider)),
        tmp_path / "m.onnx",
    )


class _Broken(Dataset[int]):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        raise DatasetError(f"image id {index}: cannot read image /data/x.jpg: truncated")


def test_a_dataloader_workers_error_is_its_own_message() -> None:
    with pytest.raises(DatasetError) as info:
        next(iter(DataLoader(_Broken(), batch_size=1, num_workers=1)))
    assert "Traceback" in str(info.value)  # what torch re-raises
    assert one_line(info.value) == "image id 0: cannot read image /data/x.jpg: truncated"


def test_a_truncated_jpeg_in_the_val_split_is_found_up_front(tmp_path: Path) -> None:
    write_synthetic_dataset(
        tmp_path, train=1, val=2, seed=0, min_size=48, max_size=64, progress=False
    )
    dataset = CocoPanopticDataset(tmp_path, "val2017")
    image = tmp_path / "val2017" / dataset.image_info(1)["file_name"]
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    with pytest.raises(DatasetError, match=rf"val split: image id .*{image.name}"):
        check_split(dataset, "val", skip_bad=False)
    assert check_split(dataset, "val", skip_bad=True, log=lambda _: None) == 1


def test_evaluate_names_a_missing_split_and_the_set_hint(
    checkpoint: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = root.parent / "no_val"
    shutil.copytree(root, bare)
    (bare / "annotations" / "panoptic_val2017.json").unlink()
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(bare)]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "split 'val2017' (data.val_split) not found" in err
    assert "train2017" in err and "--set data.val_split=NAME" in err
    # ... and --set chooses it
    out = root.parent / "metrics.json"
    assert main([*argv, "--set", "data.val_split=train2017", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["images"] == 2


def test_evaluate_set_takes_data_and_eval_keys_only(
    checkpoint: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(root)]
    assert main([*argv, "--set", "train.lr=0.1"]) == EXIT_BAD_INPUT
    assert "--set train.lr: evaluate takes data.*, eval.* keys only" in capsys.readouterr().err
    assert main([*argv, "--set", "eval.batch_size=0"]) == EXIT_BAD_INPUT
    assert "eval.batch_size" in capsys.readouterr().err
    assert main([*argv, "--set", "eval.batch_size=1", "--max-images", "1"]) == 0


def test_train_with_a_worker_reading_a_bad_image_is_one_line_without_traceback(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(root, data)
    for image in (data / "train2017").iterdir():  # the train split is not decoded up front
        image.write_bytes(b"not an image")
    argv = ["train", "--config", "tiny", "--output-dir", str(tmp_path / "run"), "--no-progress"]
    argv += ["--data-root", str(data), "--set", *SMALL, "data.num_workers=1"]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("maskconver train: error: image id "), err
    assert "Traceback" not in err and "DataLoader worker" not in err and 'File "' not in err
