"""Draw ``maskconver benchmark --compare`` tables (saved text output) as bars, log scale.

    python benchmarks/plot_compare.py docs/data/compare_256_2026-12-07.txt \\
        docs/data/compare_640_2026-12-07.txt --out docs/images/compare.png

One panel per file: every contender's end-to-end milliseconds; this model's rows in blue, the
network-only rows (no merge) in light blue, the peers in grey.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NETWORK_ONLY = " network only"


def parse(text: str) -> tuple[str, str, list[tuple[str, float, bool]]]:
    """``(title, size line, [(name, ms, is a peer)])`` from one size's report."""
    lines = text.splitlines()
    title = lines[0]
    size = next(line for line in lines if "GMACs" in line)
    rows = []
    for line in lines[lines.index(size) + 2 :]:
        if not line.startswith("  ") or "merge share" in line or "skipped" in line:
            continue
        parts = line.split()
        numbers = [i for i, p in enumerate(parts) if p.replace(".", "", 1).isdigit()]
        if not numbers:
            continue
        first = numbers[0]
        rows.append((" ".join(parts[:first]), float(parts[first]), len(parts) == first + 1))
    return title, size, rows


def main() -> None:
    """Write the picture."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("reports", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.reports), figsize=(6.5 * len(args.reports), 5))
    axes = axes if len(args.reports) > 1 else [axes]
    title = ""
    for ax, report in zip(axes, args.reports, strict=True):
        title, size, rows = parse(report.read_text(encoding="utf-8"))
        names = [n for n, _, _ in rows][::-1]
        values = [ms for _, ms, _ in rows][::-1]
        colors = [
            "0.65"
            if peer and not name.endswith(NETWORK_ONLY)
            else "lightsteelblue"
            if name.endswith(NETWORK_ONLY)
            else "tab:blue"
            for name, _, peer in rows
        ][::-1]
        ax.barh(names, values, color=colors)
        ax.set_xscale("log")
        for y, ms in enumerate(values):
            ax.text(ms, y, f" {ms:g}", va="center", fontsize=7)
        ax.set_xlabel("ms per image, end to end (log scale)")
        preset, threads, rounds = title.split(", ")[:3]
        name = preset.removeprefix("preset ")
        ax.set_title(f"{name} @ {size.split(':')[0]}, {rounds}", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"{threads}; {title.split('; ')[-1]}", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
