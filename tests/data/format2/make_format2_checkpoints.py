r"""Write the format-2 checkpoints of this folder with the code of commit 7c1a2b3.

They were written by commit 7c1a2b3 (checkpoint format 2, before the MaskConver and DR1Mask
settings moved under ``model.maskconver`` / ``model.dr1mask``):

    git worktree add /tmp/fmt2 7c1a2b3
    PYTHONPATH=/tmp/fmt2/src .venv/bin/python \
        tests/data/format2/make_format2_checkpoints.py tests/data/format2
    git worktree remove --force /tmp/fmt2

Each ``<variant>/step_000300/`` is a checkpoint as that version's ``save_checkpoint`` wrote it
(``trainer.pt`` removed to keep the files small) of a toy-sized model fitted for 300 steps on
eight synthetic scenes with its EMA (decay 0.9) and criterion: fitted, not just built as for
format 1, so that the outputs hold several thing and stuff segments. Next to it, what that
version computed with the EMA model in eval mode:

* ``expected_outputs.safetensors``: the two stored uint8 scenes ``image_0`` / ``image_1``
  (``[H, W, 3]``, 64 x 80 and 72 x 56), the batch ``images`` they make after the eval transform
  (``build_eval_transforms`` + ``inference.images_to_tensor``), every tensor field of the
  model's raw output on that batch (tuple fields as ``<name>_<i>``, None fields left out) and
  the post-processed ``panoptic_<i>`` int32 maps (``inference.predict_samples``);
* ``expected_segments.json``: per image, the segments of that map (id, category_id, isthing,
  area, score).

The variants set non-default values in the config sections that are about to move (MaskConver's
fusion / losses / targets / merge, DR1Mask's merge), so a wrong migration changes the outputs or
the config. ``test_checkpoint_format2.py`` loads them with today's code.
"""

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

import maskconver
from maskconver import build
from maskconver.config import Config, load_config
from maskconver.data.synthetic import SyntheticPanoptic
from maskconver.data.types import CategorySet, PanopticSample
from maskconver.engine.checkpoint import save_checkpoint
from maskconver.engine.ema import ModelEma
from maskconver.engine.loader import collate_train
from maskconver.engine.step import TrainingModule
from maskconver.inference import images_to_tensor, predict_samples

SMALL = [
    "model.backbone.width=2",
    "model.decoder.channels=8",
    "model.head.channels=8",
    "model.head.low_level_channels=8",
    "model.head.num_convs=1",
    "model.embedding_dim=8",
    "model.mlp_hidden=8",
    "model.head.semantic_channels=8",
    "model.head.semantic_convs=1",
    "model.num_proposals=8",
    "eval.input_size=64",
]
MOVING = [  # non-default values of the sections about to move under model.maskconver
    "model.fusion=add",
    "model.mlp_activation=gelu",
    "loss.bce_weight=3.0",
    "loss.dice_weight=4.0",
    "loss.semantic_weight=0.5",
    "targets.thing_center=mass",
    "targets.stuff_center=mass",
    "postprocess.object_threshold=0.1",  # drops a 0.09 segment that 0.01 (default) would keep
    "postprocess.overlap_threshold=0.6",
    "postprocess.min_area=24",  # maskformer ignores it: maskconver_region checks min_area
    "postprocess.merge=maskformer",
]
DR1MASK_SMALL = [
    "model.backbone.width=2",
    "model.decoder.channels=8",
    "model.dr1mask.gn_groups=4",
    "model.dr1mask.basis_width=8",
    "model.dr1mask.mask_size=8",
    "model.dr1mask.tower_convs=1",
    "model.num_proposals=6",
    "model.dr1mask.pre_nms_topk=24",
    "eval.input_size=64",
]
VARIANTS = {
    "maskconver_tiny": ("tiny", SMALL + MOVING),
    "maskconver_region": (
        "tiny",
        SMALL
        + [
            "model.stuff_mode=region",
            "loss.semantic_weight=1.0",
            "postprocess.object_threshold=0.15",
            "postprocess.min_area=20",
        ],
    ),
    "dr1mask_small": (
        "dr1mask_small",
        DR1MASK_SMALL
        + [
            "model.dr1mask.box_crop=true",
            "model.dr1mask.score_threshold=0.02",
            "model.dr1mask.nms_iou=0.5",
            "postprocess.object_threshold=0.03",
            "postprocess.min_area=8",
        ],
    ),
}
SIZES = [(64, 80), (72, 56)]
FIT_STEPS = 300
FIT_LR = 0.01


def scenes() -> list[np.ndarray]:
    """Two small synthetic scenes (uint8 ``[H, W, 3]``), cropped to ``SIZES``."""
    data = SyntheticPanoptic(len(SIZES), seed=5, min_size=80, max_size=96)
    return [np.ascontiguousarray(data[i].image[:h, :w]) for i, (h, w) in enumerate(SIZES)]


def raw_tensors(output: Any) -> dict[str, torch.Tensor]:
    """Every tensor field of a model output (tuple fields as ``<name>_<i>``, None left out)."""
    flat: dict[str, torch.Tensor] = {}
    for name, value in output._asdict().items():
        if isinstance(value, tuple):
            flat.update({f"{name}_{i}": v.contiguous() for i, v in enumerate(value)})
        elif value is not None:
            flat[name] = value.contiguous()
    return flat


def fit(cfg: Config, cats: CategorySet) -> tuple[nn.Module, ModelEma, nn.Module]:
    """A fresh model fitted for ``FIT_STEPS`` steps on 8 synthetic scenes, its EMA, its criterion.

    Fitted (not just built, as format 1 was) so that the stored outputs hold several thing and
    stuff segments, some near the score and area thresholds a wrong migration would change.
    """
    data = SyntheticPanoptic(8, seed=11, min_size=56, max_size=96)
    transform = build.build_eval_transforms(cfg)
    generator = build.build_target_generator(cfg, cats, cats.num_classes)
    items = []
    for i in range(len(data)):
        sample = transform(data[i])
        image = torch.from_numpy(sample.image.copy()).permute(2, 0, 1).float()
        items.append((image, generator(sample)))
    images, targets, _ = collate_train(items)
    torch.manual_seed(1)
    model = build.build_model(cfg.model, cats.num_classes)
    for m in model.modules():  # running statistics that follow the short fit
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    criterion = build.build_criterion(cfg, cats.num_classes)
    step = TrainingModule(
        model, criterion, teacher_forward=build.meta_architecture(cfg.model).teacher_forward
    ).train()
    optimizer = torch.optim.AdamW(step.parameters(), lr=FIT_LR)
    ema = ModelEma(model, 0.9)
    for i in range(FIT_STEPS):
        loss = step(images, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model, i)
    return model, ema, criterion


def main(out: Path) -> None:
    torch.set_num_threads(1)
    cats = SyntheticPanoptic(1).categories
    images = scenes()
    for name, (preset, overrides) in VARIANTS.items():
        cfg = load_config(preset, overrides)
        model, ema, criterion = fit(cfg, cats)
        ck = save_checkpoint(
            out / name,
            model=model,
            ema=ema,
            optimizer=None,
            step=FIT_STEPS,
            config=cfg,
            categories=cats,
            num_classes=cats.num_classes,
            metrics={"all": {"pq": 0.5}},
            criterion=criterion,
        )
        (ck / "trainer.pt").unlink()
        transform = build.build_eval_transforms(cfg)
        blank = [np.zeros(im.shape[:2], np.int32) for im in images]
        samples = [
            transform(PanopticSample(image=im, panoptic=b, segments=[]))
            for im, b in zip(images, blank)
        ]
        batch = images_to_tensor([s.image for s in samples])
        module = ema.module.eval()
        with torch.no_grad():
            raw = raw_tensors(module(batch))
        post = build.build_postprocessor(cfg, cats, cats.num_classes)
        predictions = predict_samples(module, post, samples)
        tensors = {f"image_{i}": torch.from_numpy(im) for i, im in enumerate(images)}
        tensors["images"] = batch.to(torch.uint8)  # whole numbers: scenes and pad colour
        tensors.update(raw)
        for i, p in enumerate(predictions):
            tensors[f"panoptic_{i}"] = torch.from_numpy(p.panoptic.astype(np.int32))
        save_file(tensors, str(ck / "expected_outputs.safetensors"))
        segments = [
            [
                {
                    "id": s.id,
                    "category_id": s.category_id,
                    "isthing": bool(s.isthing),
                    "area": int(s.area),
                    "score": float(s.score),
                }
                for s in p.segments
            ]
            for p in predictions
        ]
        (ck / "expected_segments.json").write_text(json.dumps(segments, indent=1) + "\n")
        found = [
            [(s["category_id"], s["area"], round(s["score"], 3)) for s in im] for im in segments
        ]
        print(name, ck, maskconver.__file__, sum(p.numel() for p in model.parameters()), found)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    for variant in VARIANTS:
        shutil.rmtree(target / variant, ignore_errors=True)
    main(target)
