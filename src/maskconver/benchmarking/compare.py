"""``maskconver benchmark --compare``: this model's deployments against each other and peers.

In one process, in interleaved rounds (every contender once per round, so load changes hit all
of them alike), with medians, at each size:

* this model's deployments (``benchmarking.deployments``): torch eager and optimised,
  onnxruntime fp32 without and with intra-op spinning, onnxruntime int8, OpenVINO fp32 / int8
  and TFLite where installed (else skipped with the reason), each including its panoptic merge,
  and onnxruntime fp32 on the graph without its merge: the merge's share of end to end;
* the peers (``benchmarking.peers``, the ``peers`` extra): Mask2Former-R50, MaskFormer-R50 and
  EoMT ViT-S / ViT-B, with their own processors and panoptic post-processing;
* a large 3x3 convolution (256 -> 256 channels at 128 x 128, channels_last, torch), the
  machine's conv throughput measured in the same run: the compute floor of a model is
  ``2 x MACs`` at that rate.

Untrained weights give every one of the K proposals a score above the threshold, so the merge
runs on all of them: the worst case of its per-proposal work. How much of the canvas it evaluates
pixel by pixel depends on how contested the untrained masks are, which depends on the random
init (``seed``). The report names the CPU.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from maskconver.benchmarking.measure import cpu_model

PEAK_CHANNELS = 256
PEAK_SIZE = 128
MS_PER_S = 1000.0


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
    others: Sequence[str] = (),
    seed: int = 0,
) -> dict[str, Any]:
    """Interleaved medians of every contender at every size; see the module docstring.

    ``others``: more presets of this library timed beside ``preset`` (their torch eager and
    onnxruntime fp32 rows; ``deployments.other_model_contenders``). ``seed``: the random init
    of the untrained models (the merge's cost depends on how contested their masks are).
    """
    from maskconver.benchmarking.deployments import (
        NETWORK_ONLY,
        other_model_contenders,
        own_contenders,
    )

    torch.set_num_threads(threads)
    report: dict[str, Any] = {
        "preset": preset,
        "threads": threads,
        "rounds": rounds,
        "cpu": cpu_model(),
        "seed": seed,
        "sizes": {},
        "conv_peak_gflops": conv_peak_gflops(),
    }
    for size in sizes:
        own = own_contenders(preset, overrides, size, num_classes, threads, seed=seed)
        contenders = dict(own.contenders)
        ours = list(contenders)
        for other in others:
            contenders.update(other_model_contenders(other, size, num_classes, threads, seed=seed))
        if peers:
            from maskconver.benchmarking.peers import peer_contenders

            contenders.update(peer_contenders(size))
        medians = interleaved_medians(contenders, rounds=rounds, warmup=warmup)
        peak = conv_peak_gflops()  # measured again right after this size's rounds
        rows = {}
        for name, ms in medians.items():
            row: dict[str, Any] = {"ms": ms}
            if name.endswith(NETWORK_ONLY):
                row["network_only"] = True
            elif name in ours:
                row["gmac_per_s"] = own.macs / (ms / MS_PER_S) / 1e9
                row["fraction_of_conv_peak"] = 2 * row["gmac_per_s"] / peak
                for peer in contenders:
                    if peer not in ours:
                        row[f"x faster than {peer}"] = medians[peer] / ms
            rows[name] = row
        shares = {
            name[: -len(NETWORK_ONLY)]: 1.0 - ms / medians[name[: -len(NETWORK_ONLY)]]
            for name, ms in medians.items()
            if name.endswith(NETWORK_ONLY) and name[: -len(NETWORK_ONLY)] in medians
        }
        report["sizes"][str(size)] = {
            "merge_share": shares,
            "macs": own.macs,
            "floor_ms": 2 * own.macs / (peak * 1e9) * MS_PER_S,
            "conv_peak_gflops": peak,
            "contenders": rows,
            "skipped": own.skipped,
        }
    return report


def interleaved_medians(
    contenders: dict[str, Any], *, rounds: int, warmup: int
) -> dict[str, float]:
    """Median milliseconds of each zero-argument call, every call once per round."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(MS_PER_S * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def format_report(report: dict[str, Any]) -> str:
    """One table per size; the peers' columns say how many times faster each row is."""
    lines = [
        f"preset {report['preset']}, {report['threads']} thread(s), {report['rounds']} "
        f"interleaved rounds, medians; CPU: {report.get('cpu', '?')}"
    ]
    for size, entry in report["sizes"].items():
        lines += [
            "",
            f"{size}x{size}: {entry['macs'] / 1e9:.3f} GMACs, conv peak "
            f"{entry['conv_peak_gflops']:.0f} GFLOP/s, compute floor {entry['floor_ms']:.1f} ms",
        ]
        rows = entry["contenders"]
        peers = [n for n, r in rows.items() if "gmac_per_s" not in r and "network_only" not in r]
        width = max([len(n) for n in rows] + [10])
        header = f"  {'':{width}s} {'ms':>9s} {'GMAC/s':>8s} {'of peak':>8s}" + "".join(
            f" {('x vs ' + p):>{max(len(p) + 5, 8)}s}" for p in peers
        )
        lines.append(header)
        for name, row in rows.items():
            line = f"  {name:{width}s} {row['ms']:9.1f}"
            if "gmac_per_s" in row:
                line += f" {row['gmac_per_s']:8.1f} {100 * row['fraction_of_conv_peak']:7.1f}%"
                line += "".join(
                    f" {row[f'x faster than {p}']:{max(len(p) + 5, 8)}.1f}" for p in peers
                )
            lines.append(line)
        for name, share in entry.get("merge_share", {}).items():
            merge_ms = rows[name]["ms"] * share
            lines.append(
                f"  merge share of {name}: {100 * share:.1f} % of end to end "
                f"({merge_ms:.1f} of {rows[name]['ms']:.1f} ms; the row without the merge "
                "in the same rounds)"
            )
        for group, reason in entry.get("skipped", {}).items():
            lines.append(f"  {group}: skipped, {reason}")
    return "\n".join(lines)
