"""``maskconver benchmark --compare``: this model against its deployments and against peers.

In one process, in interleaved rounds (every contender once per round, so load changes hit all
of them alike), with medians:

* this model in torch eager, torch optimised (traced + frozen, which folds batch norm into the
  convs, channels_last), onnxruntime fp32 and onnxruntime int8 (static QDQ), each including its
  panoptic merge;
* Mask2Former-R50 and MaskFormer-R50 from ``transformers`` (random init, built offline from
  their configs, the ``peers`` extra) including their own panoptic post-processing;
* a large 3x3 convolution (256 -> 256 channels at 128 x 128, channels_last), the machine's conv
  throughput measured in the same run: the compute floor of a model is ``2 x MACs`` at that rate.

Untrained weights give every one of the K proposals a score above the threshold, so the merge
runs on all of them: the worst case of the merge's cost.

The peers need torchvision's compiled ``nms`` ops only at import time; with the CPU torch of
this project torchvision does not load, so ``_declare_torchvision_ops`` declares the two op
schemas before importing ``transformers`` (benchmark-only; the ops are never called).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskconver.benchmarking.measure import count_macs

PEAK_CHANNELS = 256
PEAK_SIZE = 128
PEER_CLASSES = 133  # COCO panoptic


def conv_peak_gflops(runs: int = 10) -> float:
    """GFLOP/s of a 256 -> 256 3x3 conv at 128 x 128, channels_last, batch 1 (median)."""
    conv: Any = torch.nn.Conv2d(PEAK_CHANNELS, PEAK_CHANNELS, 3, padding=1, bias=False).eval()
    conv = conv.to(memory_format=torch.channels_last)  # (memory_format: missing from the stubs)
    x = torch.randn(1, PEAK_CHANNELS, PEAK_SIZE, PEAK_SIZE).contiguous(
        memory_format=torch.channels_last
    )
    flops = 2 * PEAK_CHANNELS * PEAK_CHANNELS * 9 * PEAK_SIZE * PEAK_SIZE
    with torch.inference_mode():
        conv(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


def _declare_torchvision_ops() -> None:
    """Declare ``torchvision::nms``/``qnms`` so peer model code imports (never called)."""
    try:
        torch.ops.torchvision.nms  # noqa: B018 - probing for the op
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _declare_torchvision_ops.lib = lib  # type: ignore[attr-defined]  # keep it alive


def peer_contenders(size: int) -> dict[str, Callable[[], Any]]:
    """Mask2Former-R50 and MaskFormer-R50 (random init) with their panoptic post-processing."""
    _declare_torchvision_ops()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import (
            Mask2FormerConfig,
            Mask2FormerForUniversalSegmentation,
            Mask2FormerImageProcessor,
            MaskFormerConfig,
            MaskFormerForInstanceSegmentation,
            MaskFormerImageProcessor,
        )
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        resnet = {
            "model_type": "resnet",
            "depths": [3, 4, 6, 3],
            "hidden_sizes": [256, 512, 1024, 2048],
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        }
        image = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
        out: dict[str, Callable[[], Any]] = {}
        kinds: list[tuple[str, Any, Any, Any]] = [
            (
                "Mask2Former-R50",
                Mask2FormerConfig,
                Mask2FormerForUniversalSegmentation,
                Mask2FormerImageProcessor,
            ),
            (
                "MaskFormer-R50",
                MaskFormerConfig,
                MaskFormerForInstanceSegmentation,
                MaskFormerImageProcessor,
            ),
        ]
        for name, config_cls, model_cls, processor_cls in kinds:
            config = config_cls(
                backbone_config=resnet, use_pretrained_backbone=False, num_labels=PEER_CLASSES
            )
            model = model_cls(config).eval()
            processor = processor_cls(
                size={"shortest_edge": size, "longest_edge": size}, do_resize=True
            )

            def call(model: Any = model, processor: Any = processor) -> Any:
                inputs = processor(images=image, return_tensors="pt")
                with torch.inference_mode():
                    outputs = model(**inputs)
                return processor.post_process_panoptic_segmentation(
                    outputs, target_sizes=[(size, size)]
                )

            out[name] = call
    return out


def own_contenders(
    preset: str, overrides: list[str], size: int, num_classes: int, threads: int
) -> tuple[dict[str, Callable[[], Any]], int]:
    """This model: torch eager, torch optimised, onnxruntime fp32 and int8; and its MACs."""
    from maskconver.build import build_model, build_postprocessor
    from maskconver.config import load_config
    from maskconver.data.types import Category, CategorySet
    from maskconver.export.onnx import export_model, quantize_onnx
    from maskconver.export.runtime import OnnxPanopticModel
    from maskconver.inference import TorchModel

    cfg = load_config(preset, overrides)
    classes = cfg.model.num_classes or num_classes
    categories = CategorySet(
        [Category(i + 1, f"class{i + 1}", i % 2 == 0) for i in range(classes)], "contiguous"
    )
    model = build_model(cfg.model, classes).eval()
    post = build_postprocessor(cfg, categories, classes)
    macs = count_macs(model, (size, size))
    images = torch.rand(1, 3, size, size) * 255
    sizes = [(size, size)]

    def eager() -> Any:
        with torch.inference_mode():
            return post(model(images), sizes, sizes, (size, size))

    fast = TorchModel(model, optimize=True)  # traced + frozen per input shape, channels_last

    def optimised() -> Any:
        with torch.inference_mode():
            return post(fast(images), sizes, sizes, (size, size))

    folder = Path(tempfile.mkdtemp(prefix="maskconver-compare-"))
    fp32 = folder / "model.onnx"
    export_model(model, cfg, categories, classes, fp32, size=(size, size))
    image = (np.random.default_rng(1).random((size, size, 3)) * 255).astype(np.uint8)
    feeds = [
        {
            "image": (np.random.default_rng(s).random((1, size, size, 3)) * 255).astype(np.uint8),
            "valid_size": np.array([size, size]),
            "output_size": np.array([size, size]),
        }
        for s in range(4)
    ]
    int8 = folder / "model_int8.onnx"
    quantize_onnx(fp32, int8, mode="static", calibration=feeds)
    runtimes = {
        "onnxruntime fp32": OnnxPanopticModel(fp32, threads=threads),
        "onnxruntime int8": OnnxPanopticModel(int8, threads=threads),
    }
    contenders: dict[str, Callable[[], Any]] = {"torch eager": eager, "torch optimised": optimised}
    for name, runtime in runtimes.items():

        def run(runtime: OnnxPanopticModel = runtime) -> Any:
            return runtime.run(image, (size, size), (size, size))

        contenders[name] = run
    return contenders, macs


def compare(
    preset: str,
    overrides: list[str],
    *,
    sizes: list[int],
    rounds: int,
    warmup: int,
    num_classes: int,
    threads: int,
    peers: bool = True,
) -> dict[str, Any]:
    """Interleaved medians of every contender at every size; see the module docstring."""
    torch.set_num_threads(threads)
    report: dict[str, Any] = {
        "preset": preset,
        "threads": threads,
        "rounds": rounds,
        "sizes": {},
        "conv_peak_gflops": conv_peak_gflops(),
    }
    for size in sizes:
        contenders, macs = own_contenders(preset, overrides, size, num_classes, threads)
        ours = list(contenders)
        if peers:
            contenders.update(peer_contenders(size))
        for fn in contenders.values():
            for _ in range(warmup):
                fn()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn()
                times[name].append(1000.0 * (time.perf_counter() - start))
        medians = {name: statistics.median(v) for name, v in times.items()}
        peak = conv_peak_gflops()  # measured again right after this size's rounds
        rows = {}
        for name, ms in medians.items():
            row: dict[str, Any] = {"ms": ms}
            if name in ours:
                row["gmac_per_s"] = macs / (ms / 1000.0) / 1e9
                row["fraction_of_conv_peak"] = 2 * row["gmac_per_s"] / peak
            rows[name] = row
        for name in ours:
            for peer in contenders:
                if peer not in ours:
                    rows[name][f"x faster than {peer}"] = medians[peer] / medians[name]
        report["sizes"][str(size)] = {
            "macs": macs,
            "floor_ms": 2 * macs / (peak * 1e9) * 1000.0,
            "conv_peak_gflops": peak,
            "contenders": rows,
        }
    return report


def format_report(report: dict[str, Any]) -> str:
    """One table per size."""
    lines = [
        f"preset {report['preset']}, {report['threads']} thread(s), {report['rounds']} "
        "interleaved rounds, medians"
    ]
    for size, entry in report["sizes"].items():
        lines += [
            "",
            f"{size}x{size}: {entry['macs'] / 1e9:.3f} GMACs, conv peak "
            f"{entry['conv_peak_gflops']:.0f} GFLOP/s, compute floor {entry['floor_ms']:.1f} ms",
        ]
        rows = entry["contenders"]
        peers = [n for n, r in rows.items() if "gmac_per_s" not in r]
        header = f"  {'':22s} {'ms':>9s} {'GMAC/s':>8s} {'of peak':>8s}" + "".join(
            f" {('x vs ' + p):>22s}" for p in peers
        )
        lines.append(header)
        for name, row in rows.items():
            line = f"  {name:22s} {row['ms']:9.1f}"
            if "gmac_per_s" in row:
                line += f" {row['gmac_per_s']:8.1f} {100 * row['fraction_of_conv_peak']:7.1f}%"
                line += "".join(f" {row[f'x faster than {p}']:22.1f}" for p in peers)
            lines.append(line)
    return "\n".join(lines)
