"""Re-evaluate the DR1 padding arms one image per batch (``docs/dr1.md``).

Batched evaluation pads every batch to its largest image, and the synthetic validation batches
mix portrait and landscape scenes, so at ``eval.batch_size`` 8 every batch becomes 128 x 128
whatever ``eval.pad_divisibility`` says. This script evaluates the finished padding arms of
``benchmarks/ablate_dr1.py --grid padding`` with ``batch_size=1``, so each image is padded only
to its own divisibility:

    python benchmarks/dr1_padding_eval.py --out runs/ablate_dr1
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from maskconver.engine.checkpoint import load_model
from maskconver.engine.data import build_dataset
from maskconver.engine.evaluate import evaluate_model

ARMS = {"pad 32": 32, "pad 128": 128, "pad 4 aligned": 4, "pad 4 naive": 4}


def main() -> None:
    """Print PQ / PQ_th / PQ_st per padding arm at batch size 1."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/ablate_dr1"))
    args = p.parse_args()
    print("| arm | eval padding | PQ | PQ_th | PQ_st |")
    print("|---|---|---|---|---|")
    for name, divisor in ARMS.items():
        ckpt = args.out / name.replace(" ", "_") / "seed0" / "checkpoints" / "best"
        if not ckpt.is_dir():
            print(f"| {name} | not run | | | |")
            continue
        model, cfg, categories, num_classes = load_model(ckpt)
        cfg = copy.deepcopy(cfg)
        cfg.eval.pad_divisibility = divisor
        cfg.eval.metrics = ["pq"]
        result = evaluate_model(
            model,
            build_dataset(cfg, "val"),
            cfg=cfg,
            categories=categories,
            num_classes=num_classes,
            batch_size=1,
            progress=False,
        )
        pq = {k: 100 * result[k]["pq"] for k in ("all", "things", "stuff")}
        print(f"| {name} | {divisor} | {pq['all']:.1f} | {pq['things']:.1f} | {pq['stuff']:.1f} |")


if __name__ == "__main__":
    main()
