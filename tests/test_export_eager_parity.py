"""The exported graph and eager inference of every meta-architecture give the same panoptic maps.

Both paths call the post-processor's one ``core(...)``: eager inference through
``PostProcessor.__call__``, the export graph module (``MetaArchitecture.build_export_module``)
inside its traced forward. On random weights (every proposal above a zero threshold, so the whole
merge runs), for every architecture in the table:

* the graph module traced with ``torch.jit.trace`` on one image and run on others (different
  content and sizes: the proposal count and canvas are dynamic in the trace) gives exactly the
  eager panoptic map and segments;
* the ONNX file run by onnxruntime gives the same segments (ids, classes, thing/stuff) and the
  same map up to onnxruntime's float rounding: its bilinear resize differs from torch's by about
  1e-7, which can flip a pixel where two proposals' products tie (measured: 1 pixel of 12288 for
  MaskConver, none for DR1Mask); at most 0.1 % of the pixels may differ.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from maskconver import build
from maskconver.config import load_config
from maskconver.data.synthetic import VAL_STREAM, SyntheticPanoptic
from maskconver.data.types import PanopticSample
from maskconver.inference import predict_samples
from maskconver.postprocess.merge import MergeCore
from maskconver.postprocess.segments import PanopticPrediction

# every proposal is valid and every segment is kept: the whole merge runs on random weights
OPEN_MERGE = {"object_threshold": 0.0, "min_area": 0, "overlap_threshold": 0.0}
# preset, overrides, and init spreads (parameter-name prefix -> factor on its random weights):
# a freshly initialised MaskConver has near-identical masks (one proposal wins every pixel) and
# scores within 1e-7 of each other (ties that float rounding decides), so its embedding heads
# get a x8 wider init and its center head x2 (score gaps of about 1e-5); DR1Mask's random
# detections already give about ten segments per image; kMaX's final predictor gets x10 (its
# mask logits start at a tenth of a unit-norm dot product: all probabilities near 0.5)
ARCHITECTURES = {
    "maskconver": (
        "tiny",
        ["model.backbone.width=16", "model.head.channels=32", "model.num_proposals=12"],
        {"mask_embedding": 8.0, "embedding_head": 8.0, "center_head": 2.0},
    ),
    "dr1mask": ("dr1mask_small", ["model.num_proposals=12", "model.dr1mask.mask_size=14"], {}),
    "kmax": ("kmax_tiny", ["model.num_proposals=12"], {"predictor": 10.0}),
}
ORT_AGREEMENT = 0.999  # fraction of equal pixels, onnxruntime vs eager torch
ORT_AREA_SLACK = 0.001
SIZES = [(96, 128), (120, 72), (64, 64)]  # original image sizes (eval resizes to 96)


def _merge_overrides(meta: str) -> list[str]:
    """The open-merge thresholds that the architecture's merge block has."""
    merge = getattr(load_config("tiny").model, meta).merge
    return [
        f"model.{meta}.merge.{key}={value}"
        for key, value in OPEN_MERGE.items()
        if hasattr(merge, key)
    ]


def _setup(meta: str) -> tuple:
    preset, overrides, spread = ARCHITECTURES[meta]
    cfg = load_config(preset, [*overrides, "eval.input_size=96", *_merge_overrides(meta)])
    categories = SyntheticPanoptic(1).categories
    num_classes = categories.num_classes
    torch.manual_seed(3)
    model = build.build_model(cfg.model, num_classes).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            factor = next((f for k, f in spread.items() if name.startswith(k + ".")), 1.0)
            if parameter.ndim > 1:
                parameter.mul_(factor)
    post = build.build_postprocessor(cfg, categories, num_classes)
    transform = build.build_eval_transforms(cfg)
    scenes = SyntheticPanoptic(len(SIZES), seed=9, stream=VAL_STREAM)
    samples = []
    for i, (h, w) in enumerate(SIZES):
        image = np.asarray(
            torch.nn.functional.interpolate(
                torch.from_numpy(scenes[i].image).permute(2, 0, 1)[None].float(), size=(h, w)
            )[0]
            .permute(1, 2, 0)
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
        blank = np.zeros((h, w), np.int32)
        samples.append(transform(PanopticSample(image=image, panoptic=blank, segments=[])))
    return cfg, categories, num_classes, model, post, samples


def _graph_inputs(sample: PanopticSample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image = torch.from_numpy(np.ascontiguousarray(sample.image))[None]
    valid = torch.tensor([int(v) for v in sample.meta["valid_size"]])
    orig = torch.tensor([int(v) for v in sample.meta["orig_size"]])
    return image, valid, orig


def _finish(
    post: object, outputs: tuple, names: tuple[str, ...], sample: PanopticSample
) -> PanopticPrediction:
    by_name = dict(zip(names, outputs, strict=True))
    core = MergeCore(*(by_name[n] for n in ("owner", "keep", "classes", "scores", "areas")))
    semantic = by_name.get("semantic_logits")
    return post.finish(  # type: ignore[attr-defined]
        core,
        semantic_logits=None if semantic is None else semantic[0],
        input_size=(int(sample.image.shape[0]), int(sample.image.shape[1])),
        valid_size=tuple(int(v) for v in sample.meta["valid_size"]),
        output_size=tuple(int(v) for v in sample.meta["orig_size"]),
    )


def _assert_same(a: PanopticPrediction, b: PanopticPrediction) -> None:
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    key = [(s.id, s.category_id, s.isthing, s.area) for s in a.segments]
    assert key == [(s.id, s.category_id, s.isthing, s.area) for s in b.segments]
    np.testing.assert_allclose(
        [s.score for s in a.segments], [s.score for s in b.segments], atol=1e-6
    )


@pytest.mark.parametrize("meta", sorted(build.META_ARCHITECTURES))
def test_traced_graph_equals_eager_inference(meta: str) -> None:
    cfg, _, _, model, post, samples = _setup(meta)
    module = build.meta_architecture(cfg.model).build_export_module(model, post).eval()
    names = tuple(module.output_names)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, _graph_inputs(samples[0]), check_trace=False)
    segments = 0
    for sample in samples[1:] + samples[:1]:  # other images than the trace's first
        (eager,) = predict_samples(model, post, [sample])
        with torch.no_grad():
            exported = _finish(post, traced(*_graph_inputs(sample)), names, sample)
        _assert_same(exported, eager)
        assert eager.panoptic.shape == tuple(int(v) for v in sample.meta["orig_size"])
        segments += len(eager.segments)
    assert segments >= 3 * len(samples)  # several segments per image: the merge really ran


@pytest.mark.parametrize("meta", sorted(build.META_ARCHITECTURES))
def test_onnx_graph_equals_eager_inference(meta: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX check needs the [onnx] extra")
    from maskconver.export.onnx import export_model
    from maskconver.export.runtime import OnnxPanopticModel

    cfg, categories, num_classes, model, post, samples = _setup(meta)
    path = tmp_path / f"{meta}.onnx"
    export_model(model, cfg, categories, num_classes, path, size=(96, 96))
    session = OnnxPanopticModel(path, threads=1)
    for sample in samples:
        (eager,) = predict_samples(model, post, [sample])
        (exported,) = session.predict([sample], post)
        assert float((exported.panoptic == eager.panoptic).mean()) >= ORT_AGREEMENT
        key = [(s.id, s.category_id, s.isthing) for s in exported.segments]
        assert key == [(s.id, s.category_id, s.isthing) for s in eager.segments]
        for a, b in zip(exported.segments, eager.segments, strict=True):
            assert abs(a.area - b.area) <= max(1, ORT_AREA_SLACK * b.area)
