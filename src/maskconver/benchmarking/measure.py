"""Parameters, multiply-accumulates and latency of a model config (``maskconver benchmark``).

* ``params``: every parameter of the model (the network's learnable weights).
* ``macs``: ``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2 for one eval-mode forward of a
  single image (convolutions, matmuls, einsum; resizes, norms and activations are not counted),
  measured on a ``meta``-device copy so counting costs no compute.
* ``latency_ms``: median wall time of forward + panoptic post-processing under
  ``torch.inference_mode`` (batch 1, random image), after warm-up runs.

torch is imported inside the functions: the command line imports this module's defaults while
building its parser, which must not import torch (``maskconver --help``).
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from maskconver.config import Config
    from maskconver.inference import PostProcessor

DEFAULT_NUM_CLASSES = 133  # COCO panoptic categories (contiguous label space)
DEFAULT_RUNS = 20
DEFAULT_WARMUP = 3
PIXEL_MAX = 255.0


def count_params(model: torch.nn.Module) -> int:
    """Number of parameter elements."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, size: tuple[int, int]) -> int:
    """Multiply-accumulates of one eval-mode forward of a ``[1, 3, H, W]`` image.

    Counted on a ``meta``-device copy of ``model`` (shapes only), so it is fast at any size.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta_model = copy.deepcopy(model).to("meta").eval()
    images = torch.zeros(1, 3, *size, device="meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        meta_model(images)
    return counter.get_total_flops() // 2


def dummy_postprocessor(num_classes: int, cfg: Config) -> PostProcessor:
    """The config's meta-architecture's post-processor with every class mapped.

    Category ids are ``index + 1``, alternating thing/stuff.
    """
    from maskconver.build import build_postprocessor
    from maskconver.data.types import Category, CategorySet

    categories = CategorySet(
        [Category(i + 1, f"class{i + 1}", i % 2 == 0) for i in range(num_classes)]
    )
    return build_postprocessor(cfg, categories, num_classes)


def measure_latency(
    model: torch.nn.Module,
    postprocessor: PostProcessor,
    size: tuple[int, int],
    *,
    runs: int,
    warmup: int,
    device: torch.device,
) -> float:
    """Median milliseconds of forward + post-processing for one random image."""
    import torch

    model = model.to(device).eval()
    images = torch.rand(1, 3, *size, device=device) * PIXEL_MAX
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            outputs = model(images)
            postprocessor(outputs, [size], [size], size)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def benchmark(
    preset: str,
    overrides: list[str],
    *,
    size: tuple[int, int] | None = None,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    num_classes: int = DEFAULT_NUM_CLASSES,
    device: str = "cpu",
) -> dict[str, Any]:
    """Build the config's model and measure it; returns the report dict."""
    import torch

    from maskconver.build import build_model
    from maskconver.config import load_config

    cfg = load_config(preset, overrides)
    classes = cfg.model.num_classes if cfg.model.num_classes is not None else num_classes
    hw = size or (cfg.eval.input_size, cfg.eval.input_size)
    model = build_model(cfg.model, classes).eval()
    report: dict[str, Any] = {
        "preset": preset,
        "size": list(hw),
        "num_classes": classes,
        "params": count_params(model),
        "macs": count_macs(model, hw),
        "threads": torch.get_num_threads(),
        "device": device,
    }
    latency = None
    if runs > 0:
        latency = measure_latency(
            model,
            dummy_postprocessor(classes, cfg),
            hw,
            runs=runs,
            warmup=warmup,
            device=torch.device(device),
        )
    report["latency_ms"] = latency
    report["runs"] = runs
    return report


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def format_table(report: dict[str, Any]) -> str:
    """Human-readable two-column table."""
    latency = report["latency_ms"]
    rows = [
        ("preset", str(report["preset"])),
        ("input size", f"{report['size'][0]}x{report['size'][1]}"),
        ("classes", str(report["num_classes"])),
        ("params", f"{report['params'] / 1e6:.3f} M"),
        ("MACs", f"{report['macs'] / 1e9:.3f} G"),
        (
            "latency",
            "skipped" if latency is None else f"{latency:.2f} ms (median of {report['runs']})",
        ),
        ("device / threads", f"{report['device']} / {report['threads']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
