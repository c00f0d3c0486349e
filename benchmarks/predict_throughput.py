"""Folder throughput of ``maskconver predict`` against 1000 / (single-image latency).

Writes ``--images`` synthetic 640x480 JPEGs to a temporary folder, exports each preset untrained
(fixed size, onnxruntime), then in interleaved repeats (medians):

* single-image latency: network + merge of one prepared image (``predict_samples``), and the
  whole ``predictor(path)`` (decode, resize, network, merge);
* ``maskconver predict`` on the folder: default (read-ahead + write-behind threads),
  ``--no-prefetch`` (one batch after another), each with and without overlays;
* the loader alone (read + resize + network + merge, nothing written): inline, a read-ahead
  thread, a torch ``DataLoader`` with 1 and 2 worker processes.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/predict_throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int, size: tuple[int, int] = (480, 640)) -> list[Path]:
    rng = np.random.default_rng(0)
    base = (rng.random((size[0] // 8, size[1] // 8, 3)) * 255).astype(np.uint8)
    paths = []
    for i in range(n):
        image = Image.fromarray(np.roll(base, i, axis=1)).resize((size[1], size[0]))
        paths.append(folder / f"img_{i:04d}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def export(preset: str, path: Path) -> None:
    from maskconver.build import build_model
    from maskconver.config import load_config
    from maskconver.data.types import Category, CategorySet
    from maskconver.export.onnx import export_model

    cfg = load_config(preset, [])
    classes = cfg.model.num_classes or 133
    categories = CategorySet(
        [Category(i + 1, f"class{i + 1}", i % 2 == 0) for i in range(classes)], "contiguous"
    )
    model = build_model(cfg.model, classes).eval()
    size = (cfg.eval.input_size, cfg.eval.input_size)
    export_model(model, cfg, categories, classes, path, size=size)


def latency(predictor: Any, image: Path, runs: int) -> tuple[float, float]:
    """Median ms of network + merge of a prepared image, and of ``predictor(path)``."""
    from maskconver.inference import predict_samples

    sample = predictor.prepare(image)
    network, whole = [], []
    for i in range(runs + 2):
        start = time.perf_counter()
        predict_samples(predictor.model, predictor.postprocessor, [sample])
        middle = time.perf_counter()
        predictor(image)
        if i >= 2:
            network.append(1000 * (middle - start))
            whole.append(1000 * (time.perf_counter() - middle))
    return statistics.median(network), statistics.median(whole)


def predict_cli(model: Path, folder: Path, out: Path, threads: int, extra: list[str]) -> float:
    from maskconver.cli import main

    buffer = io.StringIO()
    argv = ["predict", "--model", str(model), "--input", str(folder), "--output", str(out)]
    with contextlib.redirect_stdout(buffer):
        code = main([*argv, "--threads", str(threads), "--overwrite", *extra])
    assert code == 0, buffer.getvalue()
    match = re.search(r"([\d.]+) images/s", buffer.getvalue())
    assert match, buffer.getvalue()
    return float(match.group(1))


class Prepared:
    """Map-style dataset: path -> prepared sample (picklable for DataLoader workers)."""

    def __init__(self, paths: list[Path], transform: Callable[[Any], Any]) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from maskconver.data.image_io import load_image
        from maskconver.data.types import PanopticSample

        image = load_image(self.paths[i])
        blank = np.zeros(image.shape[:2], np.int32)
        return self.transform(PanopticSample(image=image, panoptic=blank, segments=[]))


def loader_rate(predictor: Any, paths: list[Path], kind: str) -> float:
    """Images/s of read + resize + network + merge (nothing written) with one loader kind."""
    from torch.utils.data import DataLoader

    from maskconver.commands.pipeline import prefetch
    from maskconver.inference import predict_samples

    data = Prepared(paths, predictor.transform)
    samples: Iterable[Any]
    if kind == "inline":
        samples = (data[i] for i in range(len(data)))
    elif kind == "thread":
        samples = prefetch(range(len(data)), data.__getitem__, depth=8)
    else:
        workers = int(kind.split("=")[1])
        samples = DataLoader(
            data, batch_size=None, num_workers=workers, prefetch_factor=4, collate_fn=lambda s: s
        )
    start = time.perf_counter()
    for sample in samples:
        predict_samples(predictor.model, predictor.postprocessor, [sample])
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["tiny", "mobilenet_mh_256"])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-loaders", action="store_true", help="skip the loader comparison")
    args = parser.parse_args()

    from maskconver.predictor import Predictor

    tmp = Path(tempfile.mkdtemp(prefix="maskconver-throughput-"))
    folder = tmp / "images"
    folder.mkdir()
    paths = make_images(folder, args.images)
    cli_rows = {
        "predict (read-ahead + write-behind)": [],
        "predict --no-prefetch": [],
        "predict --no-overlay": [],
        "predict --no-overlay --no-prefetch": [],
    }
    loaders = [] if args.no_loaders else ["inline", "thread", "workers=1", "workers=2"]
    for preset in args.presets:
        model = tmp / f"{preset}.onnx"
        export(preset, model)
        predictor = Predictor.from_onnx(model, threads=args.threads)
        rows: dict[str, list[float]] = {k: [] for k in [*cli_rows, *loaders]}
        latencies = []
        for _ in range(args.repeats):
            latencies.append(latency(predictor, paths[0], 20))
            for name in cli_rows:
                extra = name.split()[1:] if "--" in name else []
                rows[name].append(predict_cli(model, folder, tmp / "out", args.threads, extra))
            for kind in loaders:
                rows[kind].append(loader_rate(predictor, paths, kind))
        network = statistics.median(lat[0] for lat in latencies)
        whole = statistics.median(lat[1] for lat in latencies)
        print(
            f"{preset}: {args.images} images, {args.threads} threads; single image: network + "
            f"merge {network:.1f} ms (1000/latency {1000 / network:.1f}/s), predictor(path) "
            f"{whole:.1f} ms ({1000 / whole:.1f}/s)"
        )
        print(f"  {'':38s} {'images/s':>9s} {'/ net':>6s} {'/ path':>6s}  runs")
        for name, values in rows.items():
            rate = statistics.median(values)
            print(
                f"  {name:38s} {rate:9.2f} {rate * network / 1000:6.2f} {rate * whole / 1000:6.2f}"
                f"  {', '.join(f'{v:.2f}' for v in values)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
