"""The merge's share of the exported graph's end-to-end time, per random init (onnxruntime).

For each preset and seed: the untrained model (``torch.manual_seed(seed)``, all K proposals
valid) is exported, and the whole graph and the same graph without its merge
(``export.scope.network_only``) run in alternation on one random image (onnxruntime fp32, no
spinning, medians). The merge's share is ``1 - network / whole``. How much of the canvas the
fast merge evaluates pixel by pixel depends on how contested the untrained masks are, which
depends on the init: the contested cells and rows of cells are printed beside each figure.

    OMP_NUM_THREADS=2 python benchmarks/merge_share.py --seeds 0 1 2 3 4 5 --threads 2

``--plot PNG`` draws the shares (now and, with ``--before``, before) per size and seed;
``--replot TABLE`` draws them from this script's printed output saved to a file, without timing.

``--before DIR`` times, beside them, the whole graphs of another checkout exported from the same
inits (``DIR/{size}_s{seed}.onnx``: ``torch.manual_seed(seed)``, then that checkout's
``benchmarking.profile_run.export_untrained``; docs/merge.md has the commands).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskconver.benchmarking.measure import cpu_model

PRESETS = {256: "mobilenet_mh_256", 640: "mobilenet_mh_640"}
NUM_CLASSES = 201
WARMUP = 3


def export(size: int, seed: int, folder: Path) -> Path:
    """The untrained model of ``PRESETS[size]`` (init ``seed``) and its network-only copy."""
    import onnx

    from maskconver.benchmarking.profile_run import export_untrained
    from maskconver.export.scope import network_only

    path = folder / f"{size}_s{seed}.onnx"
    if not path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_untrained(PRESETS[size], [], (size, size), NUM_CLASSES, path, seed=seed)
        onnx.save(network_only(onnx.load(str(path))), str(path.with_suffix(".network.onnx")))
    return path


def contested(outputs: dict[str, np.ndarray]) -> tuple[float, float]:
    """Fractions of the cells and rows of cells the fast merge evaluates on the canvas."""
    from maskconver.postprocess.candidates import settle
    from maskconver.postprocess.cells import corner_offsets

    logits = torch.from_numpy(outputs["mask_logits"][0]).float()
    scores = torch.from_numpy(outputs["peak_scores"][0]).float()
    order = torch.argsort(scores, descending=True, stable=True)
    _, h, w = logits.shape
    value = torch.sigmoid(logits[order].flatten(1)) * scores[order][:, None]
    _, settled = settle(value, corner_offsets(h, w, torch.device("cpu")).flatten(1))
    open_cells = ~settled.view(h, w)
    return float(open_cells.float().mean()), float(open_cells.any(1).float().mean())


def session(path: Path, threads: int) -> Any:
    """An onnxruntime session without spinning (the backend's default)."""
    import onnxruntime as ort

    from maskconver.export.runtime import session_options

    options = session_options(threads, spinning=False)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(size: int, seed: int, args: argparse.Namespace) -> str:
    """One line: contested fractions, network, merge and share (and the --before graph's)."""
    path = export(size, seed, args.folder)
    image = (np.random.default_rng(1).random((1, size, size, 3)) * 255).astype(np.uint8)
    sizes = np.array([size, size], dtype=np.int64)
    full = {"image": image, "valid_size": sizes, "output_size": sizes}
    graphs = {"whole": path, "network": path.with_suffix(".network.onnx")}
    if args.before:
        graphs["before"] = args.before / path.name
    sessions = {name: session(p, args.threads) for name, p in graphs.items()}
    feeds = {name: {"image": image} if name == "network" else full for name in sessions}
    names = [o.name for o in sessions["network"].get_outputs()]
    cells, rows = contested(dict(zip(names, sessions["network"].run(None, {"image": image}))))
    if args.before:
        same = np.array_equal(
            sessions["whole"].run(None, full)[0], sessions["before"].run(None, full)[0]
        )
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for i in range(WARMUP + args.rounds):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds[name])
            if i >= WARMUP:
                times[name].append(1000 * (time.perf_counter() - start))
    ms = {name: statistics.median(t) for name, t in times.items()}
    line = (
        f"| {size} | {seed} | {100 * cells:.1f} % | {100 * rows:.1f} % | {ms['network']:.2f} | "
        f"{ms['whole'] - ms['network']:.2f} | {100 * (1 - ms['network'] / ms['whole']):.1f} % |"
    )
    if args.before:
        before = ms["before"] - ms["network"]
        line += f" {before:.2f} | {100 * (1 - ms['network'] / ms['before']):.1f} % | {same} |"
    return line


def parse_rows(lines: list[str]) -> list[dict[str, float]]:
    """The table rows this script prints, as numbers (size, seed, share, share before)."""
    rows = []
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 7 or not cells[0].isdigit():
            continue
        row = {"size": float(cells[0]), "seed": float(cells[1])}
        row["share"] = float(cells[6].rstrip(" %"))
        if len(cells) >= 9:
            row["before"] = float(cells[8].rstrip(" %"))
        rows.append(row)
    return rows


def plot(rows: list[dict[str, float]], path: Path, title: str) -> None:
    """Bars of the merge's share per seed, one panel per size, the 15 % goal as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({int(r["size"]) for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.6), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        group = [r for r in rows if int(r["size"]) == size]
        seeds = np.arange(len(group))
        if all("before" in r for r in group):
            ax.bar(seeds - 0.2, [r["before"] for r in group], 0.4, label="before", color="0.7")
            ax.bar(seeds + 0.2, [r["share"] for r in group], 0.4, label="now", color="tab:blue")
        else:
            ax.bar(seeds, [r["share"] for r in group], 0.6, label="now", color="tab:blue")
        ax.axhline(15, color="tab:red", linestyle="--", linewidth=1, label="goal 15 %")
        ax.set_xticks(seeds, [str(int(r["seed"])) for r in group])
        ax.set_xlabel("random init (seed)")
        ax.set_ylabel("merge, % of end to end")
        ax.set_title(f"{size} x {size}")
        top = max(max(r["share"], r.get("before", 0.0)) for r in group)
        ax.set_ylim(0, 1.4 * max(top, 15))  # room for the legend above the bars
        ax.legend(fontsize=8, ncol=3, loc="upper center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Print the table (the CPU model first)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 640], choices=sorted(PRESETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--folder", type=Path, default=Path("runs/merge_share"))
    p.add_argument("--before", type=Path, help="graphs of another checkout, same file names")
    p.add_argument("--export-only", action="store_true", help="export the graphs and stop")
    p.add_argument("--plot", type=Path, help="draw the measured shares to this PNG")
    p.add_argument("--replot", type=Path, help="draw from a saved output of this script, no runs")
    args = p.parse_args()
    if args.replot:
        lines = args.replot.read_text(encoding="utf-8").splitlines()
        plot(parse_rows(lines), args.plot or args.replot.with_suffix(".png"), lines[0])
        return
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.export_only:
        for size in args.sizes:
            for seed in args.seeds:
                export(size, seed, args.folder)
        return
    title = f"CPU: {cpu_model()}, onnxruntime {args.threads} thread(s), medians of {args.rounds}"
    print(title)
    lines = []
    header = "| size | seed | contested cells | contested rows | network ms | merge ms | share |"
    if args.before:
        header += " merge ms before | share before | same owners |"
    print(header)
    for size in args.sizes:
        for seed in args.seeds:
            lines.append(measure(size, seed, args))
            print(lines[-1], flush=True)
    if args.plot:
        plot(parse_rows(lines), args.plot, title)


if __name__ == "__main__":
    main()
