"""TFLite (LiteRT) fp32 vs weight-only / dynamic int8 vs onnxruntime, on the CPU (docs/tflite.md).

    python benchmarks/tflite_speed.py --threads 2                     # mobilenet_mh_256
    python benchmarks/tflite_speed.py --preset mobilenet_mh_640 --size 640 --threads 2
    python benchmarks/tflite_speed.py --pq runs/tiny/checkpoints/best --images 50

Speed (random weights, 201 classes): the preset is exported once per runtime at ``--size``, then
every variant runs the same random image, interleaved (one call of each per round, ``--runs``
rounds after 3 warm-up rounds) so that load on a shared machine hits them alike; the medians
are printed. Two things are timed:

* ``network``: the network alone, image in, raw outputs out: the LiteRT interpreter on each
  ``.tflite``, and onnxruntime on the same network exported to ONNX;
* ``predict``: one prepared image to a panoptic prediction through each ``inference.Backend``:
  the TFLite backend (interpreter + the post-processor's eager merge in torch) and the
  onnxruntime backend (the maskconver ``.onnx``: network and merge core in the graph).

``--pq CHECKPOINT``: PQ of the checkpoint (torch) and of its fp32, weight-only int8 and dynamic
int8 ``.tflite`` on ``--images`` synthetic validation scenes (``maskconver evaluate``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

NUM_CLASSES = 201  # the reference's raw_ids label space
WARMUP = 3


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _network_onnx(model: torch.nn.Module, size: int, path: Path) -> list[str]:
    """The network alone (``NetworkGraph``) as ONNX; returns its output names."""
    from maskconver.export.tflite import NetworkGraph

    graph = NetworkGraph(model).eval()
    image = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    with torch.no_grad():
        names = list(graph(image))

    class _Tuple(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.graph = graph

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.graph(image)
            return tuple(out[n] for n in names)

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Tuple(),
            (image,),
            str(path),
            opset_version=17,
            dynamo=False,
            input_names=["image"],
            output_names=names,
        )
    return names


def speed(preset: str, size: int, threads: int, runs: int) -> None:
    """Time every variant of one preset at one size (see the module docstring)."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from maskconver.build import build_model, build_postprocessor
    from maskconver.config import load_config
    from maskconver.data.transforms import ResizePadTo
    from maskconver.data.types import Category, CategorySet, PanopticSample
    from maskconver.export.onnx import export_model
    from maskconver.export.runtime import OnnxPanopticModel, session_options
    from maskconver.export.tflite import (
        TfLitePanopticModel,
        export_model_tflite,
        quantize_tflite_file,
    )

    torch.set_num_threads(threads)
    cfg = load_config(preset, [f"eval.input_size={size}"])
    cats = CategorySet([Category(i, f"c{i}", i % 2 == 0) for i in range(1, NUM_CLASSES)], "raw_ids")
    torch.manual_seed(0)
    model = build_model(cfg.model, NUM_CLASSES).eval()
    post = build_postprocessor(cfg, cats, NUM_CLASSES)
    tmp = Path(tempfile.mkdtemp(prefix="tflite_speed_"))
    files = {"fp32": tmp / "fp32.tflite"}
    start = time.perf_counter()
    export_model_tflite(model, cfg, cats, NUM_CLASSES, files["fp32"], size=(size, size))
    print(f"[{preset} @{size}] TFLite conversion {time.perf_counter() - start:.0f} s")
    for mode in ("weight_only", "dynamic"):
        files[mode] = tmp / f"{mode}.tflite"
        quantize_tflite_file(files["fp32"], files[mode], mode=mode)
    export_model(model, cfg, cats, NUM_CLASSES, tmp / "model.onnx", size=(size, size))
    _network_onnx(model, size, tmp / "network.onnx")
    sizes = {name: path.stat().st_size / 2**20 for name, path in files.items()}

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    sample = ResizePadTo(size, size)(
        PanopticSample(image=image, panoptic=np.zeros((size, size), np.int32), segments=[])
    )
    batch = image[None]
    network: dict[str, Callable[[], Any]] = {}
    predict: dict[str, Callable[[], Any]] = {}
    for name, path in files.items():
        runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner()
        network[f"tflite {name}"] = lambda r=runner: r(image=batch)
        backend = TfLitePanopticModel(path, threads=threads)
        predict[f"tflite {name}"] = lambda b=backend: b.predict([sample], post)
    session = ort.InferenceSession(
        str(tmp / "network.onnx"), session_options(threads), providers=["CPUExecutionProvider"]
    )
    network["onnxruntime fp32"] = lambda: session.run(None, {"image": batch})
    onnx_backend = OnnxPanopticModel(tmp / "model.onnx", threads=threads)
    predict["onnxruntime fp32"] = lambda: onnx_backend.predict([sample], post)

    for title, variants in (("network", network), ("predict", predict)):
        times: dict[str, list[float]] = {name: [] for name in variants}
        with torch.inference_mode():
            for round_ in range(WARMUP + runs):
                for name, call in variants.items():
                    start = time.perf_counter()
                    call()
                    if round_ >= WARMUP:
                        times[name].append(time.perf_counter() - start)
        for name, values in times.items():
            mode = name.split()[-1]
            extra = f", file {sizes[mode]:.1f} MiB" if name.startswith("tflite") else ""
            print(
                f"[{preset} @{size}] {title:7s} {name:20s} median "
                f"{1e3 * statistics.median(values):7.1f} ms (IQR "
                f"{1e3 * np.percentile(values, 25):.1f}-{1e3 * np.percentile(values, 75):.1f})"
                f"{extra}"
            )


def pq(checkpoint: Path, images: int, threads: int) -> None:
    """PQ of the checkpoint and its fp32 / weight-only / dynamic ``.tflite`` (synthetic val)."""
    from maskconver.cli import main
    from maskconver.data.synthetic import write_synthetic_dataset
    from maskconver.export.tflite import export_tflite, quantize_tflite_file

    tmp = Path(tempfile.mkdtemp(prefix="tflite_pq_"))
    root = tmp / "data"
    write_synthetic_dataset(
        root, train=0, val=images, seed=11, min_size=80, max_size=120, progress=False
    )
    files = {"fp32": tmp / "fp32.tflite"}
    export_tflite(checkpoint, files["fp32"])
    for mode in ("weight_only", "dynamic"):
        files[mode] = tmp / f"{mode}.tflite"
        quantize_tflite_file(files["fp32"], files[mode], mode=mode)
    sources = {"torch (checkpoint)": ["--checkpoint", str(checkpoint)]}
    sources.update({f"tflite {k}": ["--model", str(v)] for k, v in files.items()})
    for name, source in sources.items():
        out = tmp / f"{name.split()[-1].strip('()')}.json"
        args = ["evaluate", *source, "--data-root", str(root), "--threads", str(threads)]
        if main([*args, "--output", str(out)]) != 0:
            raise SystemExit(f"evaluate failed for {name}")
        metrics = json.loads(out.read_text())
        print(
            f"[pq] {name:20s} PQ {100 * metrics['all']['pq']:.2f}  things "
            f"{100 * metrics['things']['pq']:.2f}  stuff {100 * metrics['stuff']['pq']:.2f} "
            f"({images} synthetic val images)"
        )


def main() -> None:
    """Speed of the presets given, or PQ of a checkpoint with ``--pq``."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", nargs="+", default=["mobilenet_mh_256"])
    p.add_argument("--size", type=int, nargs="+", default=[256], help="one per preset")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--pq", type=Path, default=None, help="a checkpoint: PQ instead of speed")
    p.add_argument("--images", type=int, default=50, help="--pq: synthetic validation images")
    args = p.parse_args()
    print(f"CPU: {cpu_model()}, {args.threads} thread(s), torch {torch.__version__}")
    if args.pq is not None:
        pq(args.pq, args.images, args.threads)
        return
    for preset, size in zip(args.preset, args.size, strict=True):
        speed(preset, size, args.threads, args.runs)


if __name__ == "__main__":
    main()
