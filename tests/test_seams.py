"""The extension seams: generic target batches, LR-scaled parameter groups, training-only parts.

Expected values are derived in each test.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from maskconver.config import TrainConfig, load_config
from maskconver.engine.optim import build_optimizer, param_groups, set_lr
from maskconver.meta.maskconver.targets.types import TargetBatch, Targets


def _targets(value: float, k: int = 3, levels: int = 2) -> Targets:
    return Targets(
        heatmaps=[torch.full((2, 4 // (i + 1), 4 // (i + 1)), value) for i in range(levels)],
        heatmap_weights=[torch.ones(4 // (i + 1), 4 // (i + 1)) for i in range(levels)],
        center_indices=torch.arange(k),
        classes=torch.full((k,), int(value)),
        masks=torch.zeros(k, 8, 8, dtype=torch.uint8),
        mask_valid=torch.ones(k, dtype=torch.bool),
        pixel_weights=torch.ones(8, 8),
        num_instances=int(value),
    )


def test_target_batch_stacks_and_moves_every_field_generically() -> None:
    batch = TargetBatch.stack([_targets(1.0), _targets(2.0)])
    assert [h.shape for h in batch.heatmaps] == [(2, 2, 4, 4), (2, 2, 2, 2)]
    assert batch.heatmaps[1][1].unique().tolist() == [2.0]
    assert batch.classes.tolist() == [[1, 1, 1], [2, 2, 2]]
    assert batch.num_instances.dtype == torch.int64 and batch.num_instances.tolist() == [1, 2]
    moved = batch.to("meta")
    for f in dataclasses.fields(batch):
        value = getattr(moved, f.name)
        if value is None:  # optional targets this generator did not fill
            continue
        for t in value if isinstance(value, list) else [value]:
            assert t.device.type == "meta", f.name
    with pytest.raises(ValueError, match="no targets"):
        TargetBatch.stack([])


@dataclass
class _DepthTargets(Targets):
    depth: Tensor | None = None


@dataclass
class _DepthBatch(TargetBatch):
    depth: Tensor | None = None


def test_a_new_target_is_one_field() -> None:
    # the field is stacked and moved without touching stack() or to()
    items = []
    for v in (1.0, 2.0):
        base = _targets(v)
        items.append(_DepthTargets(**vars(base), depth=torch.full((8, 8), int(v))))
    batch = _DepthBatch.stack(items)
    assert isinstance(batch, _DepthBatch)
    assert batch.depth is not None and batch.depth.shape == (2, 8, 8)
    assert batch.depth[:, 0, 0].tolist() == [1, 2]
    assert batch.to("meta").depth.device.type == "meta"  # type: ignore[union-attr]
    # absent everywhere -> None; present for some images only -> error
    none_batch = _DepthBatch.stack([_DepthTargets(**vars(_targets(1.0)))] * 2)
    assert none_batch.depth is None
    with pytest.raises(ValueError, match="None for some images"):
        _DepthBatch.stack([items[0], _DepthTargets(**vars(_targets(1.0)))])


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 2, 1)


def test_lr_scales_make_their_own_groups_and_set_lr_honours_them() -> None:
    net = _Net()
    groups = param_groups(net, 1e-4, lr_scales={"backbone.": 0.1})
    layout = [(g["lr_scale"], g["weight_decay"], g["names"]) for g in groups]
    assert layout == [
        (1.0, 1e-4, ["head.weight"]),
        (1.0, 0.0, ["head.bias"]),
        (0.1, 1e-4, ["backbone.0.weight"]),
        (0.1, 0.0, ["backbone.0.bias", "backbone.1.weight", "backbone.1.bias"]),
    ]
    # the longest matching prefix wins
    nested = param_groups(net, 0.0, lr_scales={"backbone.": 0.1, "backbone.1.": 0.5})
    assert {n: g["lr_scale"] for g in nested for n in g["names"]}["backbone.1.bias"] == 0.5
    optimizer = build_optimizer(TrainConfig(lr=0.2), net, lr_scales={"backbone.": 0.1})
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.2, 0.2, 0.02, 0.02])
    set_lr(optimizer, 0.05)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.05, 0.05, 0.005, 0.005])
    # without scales the layout is the historical [decayed, non-decayed]
    plain = param_groups(net, 1e-4)
    assert len(plain) == 2 and all(g["lr_scale"] == 1.0 for g in plain)


def test_backbone_lr_mult_reaches_the_training_loop(tmp_path: Path) -> None:
    from maskconver.engine.checkpoint import latest_checkpoint, load_checkpoint
    from maskconver.engine.train import train

    cfg = load_config(
        "tiny",
        [
            "train.max_steps=1",
            "train.batch_size=2",
            "train.warmup_steps=0",
            "train.lr=0.01",
            "train.backbone_lr_mult=0.25",
            "train.ema=false",
            "augment.input_size=[64, 64]",
            "eval.input_size=64",
            "data.synthetic_train=4",
            "data.synthetic_val=2",
            "train.max_eval_images=1",
        ],
    )
    train(cfg, tmp_path / "run", progress=False)
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None
    groups = load_checkpoint(ckpt).trainer_state["optimizer"]["param_groups"]  # type: ignore[index]
    by_scale = {g["lr_scale"]: g["lr"] for g in groups}
    # one step from 0 with no warmup: lr = cosine(0) = base lr; backbone 0.25x
    assert by_scale == pytest.approx({1.0: 0.01, 0.25: 0.0025})
    names = [n for g in groups if g["lr_scale"] == 0.25 for n in g["names"]]
    assert names and all(n.startswith("model.backbone.") for n in names)


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from maskconver.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "False"
