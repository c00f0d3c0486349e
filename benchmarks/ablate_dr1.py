"""The DR1 decoder ablation (``docs/dr1.md``): equal steps, equal seeds, every arm of the issue.

Base: ``benchmarks/configs/dr1_base.yaml`` (the ``tiny`` model with the DR1Basis decoder over
levels 3-5, D = 64, centers at level 3, mask features at stride 4). Arms:

* ``main``: B1 plain top-down sum (no factors), B2 concat (no factors), B3 input factor only,
  B4 output factor only, B5 both factors (from the embedding tower);
* ``source``: B5's factors from the DR1Conv's own input (``local``; ``none`` is B1);
* ``width``: B5 at D = 32 and 128 (64 is B5);
* ``padding``: B5 with the pyramid up to level 7 (stride 128) and 124 x 124 training crops, eval
  padding to a multiple of 32, of 128 (the coarsest stride), of 4 with aligned upsampling, and of
  4 with a naive half-pixel resize;
* ``decoders``: the same model with an FPN, a BiFPN, the ConvNeXt-UNet blocks, and the tiny
  preset's ASPP (those at stride 8, as in the reference single-scale model).

For each arm it prints PQ / PQ_th / PQ_st (mean and spread over seeds), parameters, MACs and
the median CPU latency of forward + merge at 128 x 128 (``maskconver benchmark``, 1 thread), and
writes ``<out>/results.md``, ``results.json`` and ``dr1_curves.png``.

Example (the command behind ``docs/dr1.md``)::

    python benchmarks/ablate_dr1.py --grid all --out runs/ablate_dr1
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_common import ablation_parser, plot_pq, run_grids, summarize  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_BASE = HERE / "configs" / "dr1_base.yaml"
D = "model.decoder.dr1."
MAIN: dict[str, list[str]] = {
    "B1 sum": [f"{D}factor_source=none"],
    "B2 concat": [f"{D}factor_source=none", f"{D}fusion=concat"],
    "B3 A only": [f"{D}factors=in"],
    "B4 B only": [f"{D}factors=out"],
    "B5 A+B": [],
}
SOURCE = {"B5 source=local": [f"{D}factor_source=local"]}
WIDTH = {f"B5 D={w}": [f"{D}width={w}"] for w in (32, 128)}
DEEP = ["model.decoder.max_level=7", "augment.input_size=[124, 124]"]
PADDING = {
    "pad 32": [*DEEP, "eval.pad_divisibility=32"],
    "pad 128": [*DEEP, "eval.pad_divisibility=128"],
    "pad 4 aligned": [*DEEP, "eval.pad_divisibility=4"],
    "pad 4 naive": [*DEEP, "eval.pad_divisibility=4", f"{D}aligned=false"],
}
DECODERS = {
    "FPN": ["model.decoder.name=fpn"],
    "BiFPN": ["model.decoder.name=bifpn"],
    "ConvNeXt-UNet": ["model.decoder.name=convnext_unet"],
    "ASPP (tiny)": ["model.decoder.name=aspp"],
}
GRIDS = {"main": MAIN, "source": SOURCE, "width": WIDTH, "padding": PADDING, "decoders": DECODERS}
LATENCY_SIZE = 128


def cost(base: str, arm: list[str], extra: list[str]) -> dict[str, Any]:
    """Parameters, MACs and median latency (forward + merge, 1 thread) of an arm's model."""
    from maskconver.benchmarking.measure import benchmark
    from maskconver.data.synthetic import synthetic_categories

    report = benchmark(
        base,
        [*extra, *arm],
        size=(LATENCY_SIZE, LATENCY_SIZE),
        runs=20,
        warmup=3,
        num_classes=synthetic_categories().num_classes,
    )
    return {k: report[k] for k in ("params", "macs", "latency_ms")}


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """PQ against step for each sub-grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), dpi=110)
    plot_pq(axes[0], results, [*MAIN, *SOURCE, *WIDTH], "factors, source, width")
    plot_pq(axes[1], results, list(PADDING), "padding divisibility / alignment")
    plot_pq(axes[2], results, [*DECODERS, "B5 A+B"], "decoders")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sub-grids, measure the cost of each arm, report."""
    p = ablation_parser(__doc__, out="runs/ablate_dr1", base=str(DEFAULT_BASE), steps=1000)
    p.add_argument("--grid", choices=(*GRIDS, "all"), default="main")
    p.add_argument(
        "--extra-seeds", type=int, nargs="+", default=[0], help="seeds of the other grids"
    )
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    names = list(GRIDS) if args.grid == "all" else [args.grid]
    grids = [(GRIDS[n], args.seeds if n == "main" else args.extra_seeds) for n in names]
    results = run_grids(
        grids,
        base=args.base,
        extra=args.overrides,
        steps=args.steps,
        out=args.out,
        data_root=args.data_root,
        only=args.arms,
        finished_only=args.finished_only,
    )
    markdown, table = summarize(results, baseline="B1 sum")
    costs = {
        name: cost(args.base, arm, args.overrides)
        for arms, _ in grids
        for name, arm in arms.items()
        if name in results
    }
    lines = [
        "| arm | params (M) | MACs (G) @128 | latency (ms) @128, 1 thread |",
        "|---|---|---|---|",
    ]
    for name, c in costs.items():
        lines.append(
            f"| {name} | {c['params'] / 1e6:.3f} | {c['macs'] / 1e9:.3f} | {c['latency_ms']:.1f} |"
        )
    report = markdown + "\n\n" + "\n".join(lines)
    print(report)
    (args.out / "results.md").write_text(report + "\n")
    (args.out / "results.json").write_text(
        json.dumps({"table": table, "costs": costs, "runs": results}, indent=1)
    )
    plot(results, args.out / "dr1_curves.png")
    print(f"wrote {args.out / 'results.md'}, results.json and dr1_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
