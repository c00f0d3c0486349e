"""``predict`` on a folder: the read-ahead loader, the write-behind thread, the throughput line."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from maskconver.cli import main
from maskconver.commands.pipeline import WriteBehind, batches, load_input, prefetch


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_yields_every_item_once_in_order(depth: int) -> None:
    rng = random.Random(0)
    delays = [rng.random() * 0.002 for _ in range(40)]
    loaded: list[int] = []

    def load(i: int) -> int:
        time.sleep(delays[i])  # uneven load times must not reorder anything
        loaded.append(i)
        return i * 10

    assert list(prefetch(range(40), load, depth=depth)) == [i * 10 for i in range(40)]
    assert loaded == list(range(40))  # each item loaded exactly once


def test_prefetch_runs_ahead_at_most_depth() -> None:
    started: list[int] = []
    gate = threading.Event()

    def load(i: int) -> int:
        started.append(i)
        if i > 0:
            gate.wait(1.0)
        return i

    it = prefetch(range(100), load, depth=2)
    assert next(it) == 0
    time.sleep(0.05)
    # 1 and 2 may wait in the queue and 3 be loading; nothing beyond (a bounded queue)
    assert len(started) <= 2 + 2 + 1
    gate.set()
    assert list(it) == list(range(1, 100))


def test_prefetch_raises_at_the_failing_item_and_stops_when_abandoned() -> None:
    def load(i: int) -> int:
        if i == 3:
            raise RuntimeError("item 3")
        return i

    got = []
    with pytest.raises(RuntimeError, match="item 3"):
        for value in prefetch(range(10), load, depth=2):
            got.append(value)
    assert got == [0, 1, 2]
    before = threading.active_count()
    it = prefetch(range(10**6), lambda i: i, depth=2)
    assert next(it) == 0
    it.close()  # the consumer stops early: the producer thread ends
    assert threading.active_count() <= before


def test_write_behind_keeps_order_and_reports_failures() -> None:
    out: list[int] = []
    with WriteBehind(2) as behind:
        for i in range(20):
            behind.submit(lambda i=i: out.append(i))
    assert out == list(range(20))

    def fail() -> None:
        raise OSError("disk full")

    behind = WriteBehind(2)
    behind.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        behind.close()
    inline: list[int] = []
    WriteBehind(0).submit(lambda: inline.append(1))  # depth 0: runs in the caller's thread
    assert inline == [1]


def test_batches() -> None:
    assert [len(b) for b in batches(iter(range(7)), 3)] == [3, 3, 1]  # type: ignore[arg-type]


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"im{i}.png"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@dataclass
class FakeSample:
    size: tuple[int, int]
    file_name: str = ""


class FakePredictor:
    def prepare(self, image: np.ndarray) -> FakeSample:
        return FakeSample((image.shape[0], image.shape[1]))


def test_loader_yields_each_image_once_in_order_and_flags_bad_files(tmp_path: Path) -> None:
    paths = write_images(tmp_path, [(10, 12), (7, 5), (9, 9), (4, 6)])
    bad = tmp_path / "im1b.png"
    bad.write_bytes(b"not a png")
    order = [paths[0], paths[1], bad, paths[2], paths[3]]
    items = [(p, p.stem, i) for i, p in enumerate(order)]
    loaded = list(prefetch(items, lambda item: load_input(FakePredictor(), item), depth=2))
    assert [item.path for item in loaded] == order
    assert [item.image_id for item in loaded] == list(range(5))
    assert loaded[2].error is not None and "im1b.png" in loaded[2].error
    assert loaded[2].sample is None and loaded[2].image is None
    samples = [item.sample for i, item in enumerate(loaded) if i != 2]
    assert [s.size for s in samples] == [(10, 12), (7, 5), (9, 9), (4, 6)]
    assert [s.file_name for s in samples] == [p.name for p in paths]  # failures name the file


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime", reason="predict --model runs onnxruntime")
    from maskconver.build import build_model
    from maskconver.config import load_config
    from maskconver.data.types import Category, CategorySet
    from maskconver.export.onnx import export_model

    cfg = load_config("tiny", ["model.num_proposals=5"])
    classes = 4
    categories = CategorySet(
        [Category(i + 1, f"class{i + 1}", i % 2 == 0) for i in range(classes)], "contiguous"
    )
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_model(
        build_model(cfg.model, classes).eval(), cfg, categories, classes, path, size=(64, 64)
    )
    return path


def run_predict(model: Path, inputs: Path, out: Path, *extra: str) -> int:
    argv = ["predict", "--model", str(model), "--input", str(inputs), "--output", str(out)]
    return main([*argv, "--batch-size", "2", "--threads", "1", *extra])


def test_predict_folder_skips_bad_image_and_prints_images_per_second(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    paths = write_images(inputs, [(40, 50), (30, 20), (64, 64), (20, 70), (33, 33)])
    (inputs / "im1b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert run_predict(tiny_onnx, inputs, tmp_path / "a") == 0
    captured = capsys.readouterr()
    assert "skipped:" in captured.err and "im1b.jpg" in captured.err
    assert "1 image(s) could not be read" in captured.err
    line = next(line for line in captured.out.splitlines() if "images/s" in line)
    assert float(line.split()[0]) > 0 and "(5 in " in line
    payload = json.loads((tmp_path / "a" / "predictions.json").read_text())
    assert [a["image_id"] for a in payload["annotations"]] == [p.stem for p in paths]
    for path in paths:
        assert (tmp_path / "a" / f"{path.stem}.png").is_file()
        assert (tmp_path / "a" / f"{path.stem}_overlay.jpg").is_file()
    # the same predictions without the background threads
    assert run_predict(tiny_onnx, inputs, tmp_path / "b", "--no-prefetch") == 0
    again = json.loads((tmp_path / "b" / "predictions.json").read_text())
    assert again["annotations"] == payload["annotations"]
    for path in paths:
        a = np.asarray(Image.open(tmp_path / "a" / f"{path.stem}.png"))
        b = np.asarray(Image.open(tmp_path / "b" / f"{path.stem}.png"))
        assert np.array_equal(a, b)


def test_predict_write_failure_stops_and_json_lists_written(
    tiny_onnx: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A write failing on the background thread ends the run with its error, as it did inline."""
    import maskconver.data.image_io as image_io

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_images(inputs, [(20, 20)] * 4)
    calls: list[Any] = []

    def failing_save(path: Path, picture: np.ndarray) -> None:
        calls.append(path)
        raise OSError(f"cannot write {path}")

    monkeypatch.setattr(image_io, "save_image", failing_save)
    assert run_predict(tiny_onnx, inputs, tmp_path / "out") != 0
    assert "cannot write" in capsys.readouterr().err
    assert len(calls) == 1  # nothing more was written after the failure
    payload = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [a["image_id"] for a in payload["annotations"]] == ["im0"]  # its PNG was written
