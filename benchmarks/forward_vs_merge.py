"""Where the time goes: eager forward vs panoptic merge of a preset, untrained (all K kept).

    python benchmarks/forward_vs_merge.py --threads 2
    python benchmarks/forward_vs_merge.py --preset mobilenet_mh_640 --size 640 --threads 2

Prints the median over ``--runs`` timed runs (after 5 warm-up runs) of the model's forward and
of the post-processor's merge, timed separately on the same random image.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from maskconver.build import build_model, build_postprocessor
from maskconver.config import load_config
from maskconver.data.types import Category, CategorySet

NUM_CLASSES = 201  # the reference's raw_ids label space
WARMUP = 5


def main() -> None:
    """Time forward and merge of the presets given."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", nargs="+", default=["mobilenet_mh_256", "mobilenet_mh_640"])
    p.add_argument("--size", type=int, nargs="+", default=[256, 640], help="one per preset")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cats = CategorySet(
        [Category(i, f"c{i}", i % 2 == 0) for i in range(1, NUM_CLASSES + 1)], "raw_ids"
    )
    for preset, size in zip(args.preset, args.size, strict=True):
        cfg = load_config(preset)
        model = build_model(cfg.model, NUM_CLASSES).eval()
        merge = build_postprocessor(cfg, cats, NUM_CLASSES)
        image = torch.rand(1, 3, size, size) * 255
        canvas = [(size, size)]
        forward_s, merge_s = [], []
        with torch.inference_mode():
            for i in range(WARMUP + args.runs):
                start = time.perf_counter()
                out = model(image)
                middle = time.perf_counter()
                merge(out, canvas, canvas, (size, size))
                end = time.perf_counter()
                if i >= WARMUP:
                    forward_s.append(middle - start)
                    merge_s.append(end - middle)
        kept = int((out.scores > cfg.model.maskconver.merge.object_threshold).sum())
        print(
            f"{preset} @{size}: forward {1e3 * statistics.median(forward_s):.1f} ms, merge "
            f"{1e3 * statistics.median(merge_s):.1f} ms ({kept} of {out.scores.shape[1]} "
            f"proposals above the threshold), {args.threads} thread(s)"
        )


if __name__ == "__main__":
    main()
