"""The fast merge equals the exact one on >= 99.9 % of the pixels (``docs/merge.md``).

``model.maskconver.merge.algorithm="fast"`` (the default) merges at mask resolution and refines
the owner map on the canvas (``postprocess.merge_fast``); ``"exact"`` upsamples every proposal
to the canvas (``postprocess.merge``). Both return the same ``MergeCore`` contract. Checked:

* random smooth logits over many sizes (canvas larger and smaller than the mask map, sizes that
  are no multiple of 4 or 32, a crop of the padded canvas), both merge modes, sigmoid and hard
  sigmoid: owner maps agree on >= 99.9 % of all pixels;
* a random tiny MaskConver (the export-parity test's widened init, all proposals valid) at
  several input and image sizes;
* a trained tiny MaskConver (slow: a short synthetic run): >= 99.9 % of the pixels over the
  validation images, and the same segments in almost all of them;
* the config switch, its range check and its wiring; the trace of the fast core; the exported
  ONNX graph of either algorithm against eager inference.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver import build
from maskconver.config import ConfigError, load_config
from maskconver.data.synthetic import VAL_STREAM, SyntheticPanoptic
from maskconver.meta.maskconver.postprocess import PanopticPostProcessor
from maskconver.postprocess.merge import MergeCore

AGREEMENT = 0.999  # fraction of canvas pixels where the two owner maps agree, pooled
CATEGORIES = [11, 22, -1, 33, 44, 55, 66]  # class 2 maps to no category
THINGS = [True, True, False, False, True, False, True]
# (mask map (h, w), padded input, resized image inside it, original image): canvas larger than
# the mask map, smaller than it, sizes that are no multiple of 4 / 32, a crop of the padding
GEOMETRIES = [
    ((32, 32), (128, 128), (128, 128), (128, 128)),
    ((32, 32), (128, 128), (120, 100), (243, 201)),
    ((24, 40), (96, 160), (90, 157), (90, 157)),
    ((25, 19), (100, 76), (97, 75), (333, 257)),
    ((32, 32), (128, 128), (128, 96), (61, 45)),
    ((40, 40), (160, 160), (150, 111), (641, 475)),
]
OPEN = {"object_threshold": 0.0, "min_area": 0, "overlap_threshold": 0.0}


def _processor(algorithm: str, **kwargs: object) -> PanopticPostProcessor:
    return PanopticPostProcessor(
        class_to_category=CATEGORIES,
        is_thing_class=THINGS,
        algorithm=algorithm,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def _smooth_logits(num: int, size: tuple[int, int], seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Blob-like random mask logits (a coarse field upsampled, plus fine noise), scores, classes."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num, 1, max(2, size[0] // 6), max(2, size[1] // 6), generator=g) * 6
    logits = F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)[:, 0]
    logits = logits + 0.3 * torch.randn(num, *size, generator=g)
    scores = torch.rand(num, generator=g)
    classes = torch.randint(0, len(CATEGORIES), (num,), generator=g)
    return logits, scores, classes


def _cores(
    logits: Tensor, scores: Tensor, classes: Tensor, geometry: tuple, **kwargs: object
) -> tuple[MergeCore, MergeCore]:
    _, input_size, valid_size, output_size = geometry
    sizes = {"input_size": input_size, "valid_size": valid_size, "output_size": output_size}
    exact = _processor("exact", **kwargs).core(logits, scores, classes, **sizes)
    fast = _processor("fast", **kwargs).core(logits, scores, classes, **sizes)
    return exact, fast


def _check_contract(core: MergeCore, exact: MergeCore) -> None:
    assert core.owner.shape == exact.owner.shape and core.owner.dtype == torch.int64
    for name in ("keep", "classes", "scores", "areas"):
        assert getattr(core, name).shape == getattr(exact, name).shape
        assert getattr(core, name).dtype == getattr(exact, name).dtype
    assert torch.equal(core.classes, exact.classes) and torch.equal(core.scores, exact.scores)
    owned = core.owner[core.owner >= 0]
    assert torch.equal(core.areas, torch.bincount(owned, minlength=core.areas.shape[0]))


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="reference"),
        pytest.param(OPEN, id="reference-open"),
        pytest.param({"merge": "maskformer", "overlap_threshold": 0.8}, id="maskformer"),
        pytest.param({**OPEN, "merge": "maskformer", "mask_threshold": 0.3}, id="maskformer-open"),
        pytest.param({**OPEN, "hard_sigmoid": True}, id="hard-sigmoid"),
    ],
)
def test_fast_equals_exact_on_random_logits(settings: dict) -> None:
    same = total = 0
    for index, geometry in enumerate(GEOMETRIES):
        for seed in range(3):
            logits, scores, classes = _smooth_logits(30, geometry[0], 100 * index + seed)
            exact, fast = _cores(logits, scores, classes, geometry, **settings)
            _check_contract(fast, exact)
            same += int((fast.owner == exact.owner).sum())
            total += exact.owner.numel()
    assert same / total >= AGREEMENT


def test_fast_merge_edge_cases() -> None:
    logits, scores, classes = _smooth_logits(1, (8, 8), 0)  # one proposal
    exact, fast = _cores(logits, scores.clamp(min=0.5), classes * 0, GEOMETRIES[1], **OPEN)
    assert torch.equal(fast.owner, exact.owner)
    # nothing valid: every pixel void, no area
    logits, scores, classes = _smooth_logits(5, (8, 8), 1)
    exact, fast = _cores(logits, scores * 0, classes, GEOMETRIES[1])
    assert bool((fast.owner == -1).all()) and not bool(fast.keep.any())
    assert torch.equal(fast.areas, exact.areas)
    # one mask pixel per axis: the map's single cell covers the canvas
    logits, scores, classes = _smooth_logits(4, (1, 1), 2)
    exact, fast = _cores(logits, scores, classes, ((1, 1), (4, 4), (4, 4), (9, 7)), **OPEN)
    assert torch.equal(fast.owner, exact.owner)


def test_fast_core_traces() -> None:
    """The fast core under ``torch.jit.trace`` gives the eager result on other inputs."""
    post = _processor("fast", **OPEN)

    def core(logits: Tensor, scores: Tensor, classes: Tensor, size: Tensor) -> tuple:
        sizes = (size[0], size[1])
        return tuple(
            post.core(
                logits, scores, classes, input_size=sizes, valid_size=sizes, output_size=sizes
            )
        )

    logits, scores, classes = _smooth_logits(6, (10, 12), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(core, (logits, scores, classes, torch.tensor([40, 48])))
    other = _smooth_logits(6, (10, 12), 4)
    for size in ((40, 48), (37, 53)):
        expected = core(*other, torch.tensor(size))
        for a, b in zip(traced(*other, torch.tensor(size)), expected, strict=True):
            assert torch.equal(a, b)


def test_config_switch_and_wiring() -> None:
    cfg = load_config("tiny")
    assert cfg.model.maskconver.merge.algorithm == "fast"  # the default
    categories = SyntheticPanoptic(1).categories
    num_classes = categories.num_classes
    for algorithm in ("exact", "fast"):
        cfg = load_config("tiny", [f"model.maskconver.merge.algorithm={algorithm}"])
        post = build.build_postprocessor(cfg, categories, num_classes)
        assert post.algorithm == algorithm  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="algorithm"):
        load_config("tiny", ["model.maskconver.merge.algorithm=approximate"])
    with pytest.raises(ValueError, match="algorithm"):
        _processor("approximate")


def _model_cores(
    model: torch.nn.Module, cfg: object, samples: list, input_size: int
) -> list[tuple[MergeCore, MergeCore]]:
    categories = SyntheticPanoptic(1).categories
    posts = {}
    for algorithm in ("exact", "fast"):
        post = build.build_postprocessor(cfg, categories, categories.num_classes)  # type: ignore[arg-type]
        post.algorithm = algorithm  # type: ignore[attr-defined]
        posts[algorithm] = post
    results = []
    for sample in samples:
        image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1)[None]
        with torch.no_grad():
            out = model(image.float())
        sizes = {
            "input_size": (input_size, input_size),
            "valid_size": tuple(int(v) for v in sample.meta["valid_size"]),
            "output_size": tuple(int(v) for v in sample.meta["orig_size"]),
        }
        pair = tuple(
            posts[a].core(out.mask_logits[0], out.scores[0], out.classes[0], **sizes)  # type: ignore[attr-defined]
            for a in ("exact", "fast")
        )
        results.append(pair)
    return results  # type: ignore[return-value]


def _agreement(pairs: list[tuple[MergeCore, MergeCore]]) -> float:
    same = sum(int((e.owner == f.owner).sum()) for e, f in pairs)
    return same / sum(e.owner.numel() for e, _ in pairs)


@pytest.mark.parametrize("input_size", [96, 100])
def test_fast_equals_exact_on_a_random_model(input_size: int) -> None:
    """The export-parity test's random tiny model (every proposal valid), several image sizes."""
    overrides = [
        "model.backbone.width=16",
        "model.head.channels=32",
        "model.num_proposals=12",
        f"eval.input_size={input_size}",
        *(f"model.maskconver.merge.{k}={v}" for k, v in OPEN.items()),
    ]
    cfg = load_config("tiny", overrides)
    categories = SyntheticPanoptic(1).categories
    torch.manual_seed(3)
    model = build.build_model(cfg.model, categories.num_classes).eval()
    spread = {"mask_embedding": 8.0, "embedding_head": 8.0, "center_head": 2.0}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            factor = next((f for k, f in spread.items() if name.startswith(k + ".")), 1.0)
            if parameter.ndim > 1:
                parameter.mul_(factor)
    transform = build.build_eval_transforms(cfg)
    scenes = SyntheticPanoptic(6, seed=5, stream=VAL_STREAM, min_size=61, max_size=203)
    samples = [transform(scenes[i]) for i in range(len(scenes))]
    pairs = _model_cores(model, cfg, samples, input_size)
    assert _agreement(pairs) >= AGREEMENT
    assert sum(int(e.keep.sum()) for e, _ in pairs) >= 3 * len(pairs)  # the merge really ran


@pytest.mark.slow
def test_fast_equals_exact_on_a_trained_model(tmp_path: Path) -> None:
    """A short synthetic run of the tiny preset; >= 99.9 % of the validation pixels agree."""
    from maskconver.engine.checkpoint import load_model
    from maskconver.engine.train import train

    cfg = load_config(
        "tiny",
        [
            "train.max_steps=300",
            "train.ckpt_every=300",
            "train.log_every=100",
            "data.synthetic_val=4",
        ],
    )
    train(cfg, output_dir=tmp_path, progress=False)
    model, cfg, categories, _ = load_model(tmp_path / "checkpoints" / "best")
    transform = build.build_eval_transforms(cfg)
    scenes = SyntheticPanoptic(24, seed=1, stream=VAL_STREAM)
    samples = [transform(scenes[i]) for i in range(len(scenes))]
    pairs = _model_cores(model, cfg, samples, cfg.eval.input_size)
    assert _agreement(pairs) >= AGREEMENT
    same_segments = sum(bool(torch.equal(e.keep, f.keep)) for e, f in pairs)
    assert same_segments >= len(pairs) - 2
    assert sum(int(e.keep.sum()) for e, _ in pairs) >= len(pairs)  # it found segments


@pytest.mark.parametrize("algorithm", ["exact", "fast"])
def test_exported_graph_runs_either_algorithm(algorithm: str, tmp_path: Path) -> None:
    """The ONNX graph of each algorithm gives eager inference's maps (the parity test covers
    the default with several architectures; this keeps the exact one exported too)."""
    pytest.importorskip("onnxruntime", reason="the ONNX check needs the [onnx] extra")
    from maskconver.export.onnx import export_model
    from maskconver.export.runtime import OnnxPanopticModel
    from maskconver.inference import predict_samples

    overrides = [
        "model.backbone.width=16",
        "model.head.channels=32",
        "model.num_proposals=12",
        "eval.input_size=96",
        f"model.maskconver.merge.algorithm={algorithm}",
        *(f"model.maskconver.merge.{k}={v}" for k, v in OPEN.items()),
    ]
    cfg = load_config("tiny", overrides)
    categories = SyntheticPanoptic(1).categories
    num_classes = categories.num_classes
    torch.manual_seed(3)
    model = build.build_model(cfg.model, num_classes).eval()
    post = build.build_postprocessor(cfg, categories, num_classes)
    path = tmp_path / f"{algorithm}.onnx"
    export_model(model, cfg, categories, num_classes, path, size=(96, 96))
    session = OnnxPanopticModel(path, threads=1)
    transform = build.build_eval_transforms(cfg)
    scenes = SyntheticPanoptic(2, seed=7, stream=VAL_STREAM, min_size=70, max_size=150)
    for i in range(len(scenes)):
        sample = transform(scenes[i])
        (eager,) = predict_samples(model, post, [sample])
        (exported,) = session.predict([sample], post)
        assert float((exported.panoptic == eager.panoptic).mean()) >= AGREEMENT
