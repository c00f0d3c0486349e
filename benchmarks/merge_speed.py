"""The panoptic merge, exact vs fast: eager torch and onnxruntime, interleaved medians.

    OMP_NUM_THREADS=2 python benchmarks/merge_speed.py --threads 2
    python benchmarks/merge_speed.py --preset mobilenet_mh_256 --size 256 --runs 30

For each preset (random weights, ``object_threshold=0`` so all K proposals are valid and the
whole merge runs) it times, on one random image:

* ``eager merge``: ``PanopticPostProcessor.core`` on the model's outputs (torch);
* ``ORT merge``: a graph of the merge core alone (mask logits, scores, classes -> owner map
  and per-proposal tensors), exported once per algorithm and run by onnxruntime;
* ``ORT graph``: the whole exported graph (``maskconver export``: image -> merge core).

Exact and fast calls alternate within each round (``--runs`` rounds after ``WARMUP``), and the
table reports medians and the exact / fast ratio, plus the fraction of canvas pixels where the
two owner maps agree. The CPU model (``/proc/cpuinfo``) and thread count head the output.

    python benchmarks/merge_speed.py --agreement runs/tiny/checkpoints/best --images 300

instead compares the two merges of a trained checkpoint on synthetic validation scenes (the
config's ``data.synthetic_seed``): the fraction of all canvas pixels with the same owner, the
lowest per image, and how many images keep exactly the same proposals.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from maskconver.benchmarking.measure import cpu_model
from maskconver.build import build_model, build_postprocessor
from maskconver.config import load_config
from maskconver.data.types import Category, CategorySet
from maskconver.export.onnx import export_model

NUM_CLASSES = 201  # the reference's raw_ids label space
WARMUP = 3
ALGORITHMS = ("exact", "fast")
OPEN = ["model.maskconver.merge.object_threshold=0.0"]  # every proposal valid: the whole merge


class MergeGraph(nn.Module):
    """The merge core alone: ``(mask_logits [K, h, w], scores, classes) -> MergeCore``."""

    def __init__(self, post: Any, size: int) -> None:
        super().__init__()
        self.post = post
        self.size = size

    def forward(self, mask_logits: Tensor, scores: Tensor, classes: Tensor) -> tuple[Tensor, ...]:
        """The core on a ``size x size`` canvas (the sizes traced as tensors, as in export)."""
        side = torch._shape_as_tensor(mask_logits)[1] * 0 + self.size
        return tuple(
            self.post.core(
                mask_logits,
                scores,
                classes,
                input_size=(side, side),
                valid_size=(side, side),
                output_size=(side, side),
            )
        )


def interleaved(calls: dict[str, Callable[[], Any]], runs: int) -> dict[str, float]:
    """Median seconds of each call, the calls alternating within every round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(WARMUP + runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if i >= WARMUP:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def session(path: Path, threads: int) -> Any:
    """An onnxruntime session on ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_merge(post: Any, size: int, inputs: tuple[Tensor, ...], path: Path) -> None:
    """The merge-only graph of ``post`` to ``path``."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MergeGraph(post, size),
            inputs,
            str(path),
            opset_version=17,
            dynamo=False,
            input_names=["mask_logits", "scores", "classes"],
            output_names=["owner", "keep", "classes_out", "scores_out", "areas"],
        )


def bench(preset: str, size: int, args: argparse.Namespace, work: Path) -> list[str]:
    """Rows of the table for one preset."""
    cfgs = {
        a: load_config(preset, [*OPEN, f"model.maskconver.merge.algorithm={a}"]) for a in ALGORITHMS
    }
    cats = CategorySet([Category(i, f"c{i}", i % 2 == 0) for i in range(1, NUM_CLASSES)], "raw_ids")
    torch.manual_seed(0)
    model = build_model(cfgs["exact"].model, NUM_CLASSES).eval()
    posts = {a: build_postprocessor(cfgs[a], cats, NUM_CLASSES) for a in ALGORITHMS}
    image = (torch.rand(1, size, size, 3) * 255).to(torch.uint8)
    with torch.inference_mode():
        out = model(image.permute(0, 3, 1, 2).float())
    logits, scores, classes = out.mask_logits[0], out.scores[0], out.classes[0]
    hw = (size, size)
    valid = int((scores > 0).sum())

    def core(a: str) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return posts[a].core(
                    logits, scores, classes, input_size=hw, valid_size=hw, output_size=hw
                )

        return call

    owners = {a: core(a)().owner for a in ALGORITHMS}
    agree = float((owners["exact"] == owners["fast"]).float().mean())
    rows = []
    eager = interleaved({a: core(a) for a in ALGORITHMS}, args.runs)
    rows.append(_row(preset, "eager merge", eager))
    if not args.skip_onnx:
        merge_calls, graph_calls = {}, {}
        feeds = {
            "mask_logits": logits.numpy(),
            "scores": scores.numpy(),
            "classes": classes.numpy(),
        }
        graph_feeds = {
            "image": image.numpy(),
            "valid_size": np.array(hw, dtype=np.int64),
            "output_size": np.array(hw, dtype=np.int64),
        }
        for a in ALGORITHMS:
            merge_path = work / f"{preset}_{a}_merge.onnx"
            export_merge(posts[a], size, (logits, scores, classes), merge_path)
            merge_session = session(merge_path, args.threads)
            merge_calls[a] = lambda s=merge_session: s.run(None, feeds)
            graph_path = work / f"{preset}_{a}.onnx"
            export_model(model, cfgs[a], cats, NUM_CLASSES, graph_path, size=hw)
            graph_session = session(graph_path, args.threads)
            graph_calls[a] = lambda s=graph_session: s.run(None, graph_feeds)
        ort_owner = merge_calls["fast"]()[0]
        ort_agree = float((ort_owner == owners["exact"].numpy()).mean())
        rows.append(_row(preset, "ORT merge", interleaved(merge_calls, args.runs)))
        rows.append(_row(preset, "ORT graph", interleaved(graph_calls, args.runs)))
        rows.append(f"| {preset} | ORT fast owner = eager exact owner | {100 * ort_agree:.3f} % |")
    rows.append(f"| {preset} | fast owner = exact owner (eager) | {100 * agree:.3f} % |")
    rows.append(f"| {preset} | valid proposals | {valid} of {scores.shape[0]} |")
    return rows


def _row(preset: str, path: str, medians: dict[str, float]) -> str:
    exact, fast = medians["exact"], medians["fast"]
    return (
        f"| {preset} | {path} | {1e3 * exact:.1f} ms | {1e3 * fast:.1f} ms | {exact / fast:.2f}x |"
    )


def agreement(checkpoint: str, images: int) -> None:
    """Print how often the fast merge of a trained checkpoint equals the exact one."""
    from maskconver.build import build_eval_transforms
    from maskconver.data.synthetic import VAL_STREAM, SyntheticPanoptic
    from maskconver.engine.checkpoint import load_model

    model, cfg, categories, num_classes = load_model(checkpoint)
    post = build_postprocessor(cfg, categories, num_classes)
    transform = build_eval_transforms(cfg)
    scenes = SyntheticPanoptic(images, seed=cfg.data.synthetic_seed, stream=VAL_STREAM)
    same = total = same_keep = kept = 0
    lowest = 1.0
    for i in range(images):
        sample = transform(scenes[i])
        image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            out = model(image.float())
        sizes = {
            "input_size": tuple(image.shape[-2:]),
            "valid_size": tuple(int(v) for v in sample.meta["valid_size"]),
            "output_size": tuple(int(v) for v in sample.meta["orig_size"]),
        }
        cores = {}
        for a in ALGORITHMS:
            post.algorithm = a
            cores[a] = post.core(out.mask_logits[0], out.scores[0], out.classes[0], **sizes)
        equal = int((cores["exact"].owner == cores["fast"].owner).sum())
        same, total = same + equal, total + cores["exact"].owner.numel()
        lowest = min(lowest, equal / cores["exact"].owner.numel())
        same_keep += int(torch.equal(cores["exact"].keep, cores["fast"].keep))
        kept += int(cores["exact"].keep.sum())
    print(
        f"{checkpoint}: {images} images, {kept} segments (exact); owner maps agree on "
        f"{100 * same / total:.3f} % of {total} pixels (lowest image {100 * lowest:.2f} %); "
        f"the same proposals kept in {same_keep} of {images} images"
    )


def main() -> None:
    """Time exact vs fast merge for the presets given and print a markdown table."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", nargs="+", default=["mobilenet_mh_256", "mobilenet_mh_640"])
    p.add_argument("--size", type=int, nargs="+", default=[256, 640], help="one per preset")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--skip-onnx", action="store_true", help="eager torch only")
    p.add_argument("--agreement", metavar="CHECKPOINT", help="compare the merges of a model")
    p.add_argument("--images", type=int, default=300, help="scenes for --agreement")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.agreement:
        agreement(args.agreement, args.images)
        return
    print(f"CPU: {cpu_model()}; {args.threads} thread(s); torch {torch.__version__}")
    if not args.skip_onnx:
        import onnxruntime as ort

        print(f"onnxruntime {ort.__version__}")
    print("| preset | path | exact | fast | exact / fast |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for preset, size in zip(args.preset, args.size, strict=True):
            for row in bench(preset, size, args, Path(tmp)):
                print(row, flush=True)


if __name__ == "__main__":
    main()
