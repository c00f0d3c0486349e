"""Write the format-1 checkpoints of this folder with the pre-format-2 code.

They were written by commit 3e4dd19 (maskconver 0.1.0, checkpoint format 1):

    git worktree add /tmp/old 3e4dd19
    PYTHONPATH=/tmp/old/src python tests/data/format1/make_format1_checkpoints.py tests/data/format1

Each ``<variant>/step_000003/`` is a checkpoint as that version wrote it (``trainer.pt`` removed to
keep the files small) plus ``expected_outputs.safetensors``: the EMA model's eval outputs on the
stored ``images``, computed by that version. ``test_checkpoint_formats.py`` loads them with
today's code.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from maskconver import build
from maskconver.config import load_config
from maskconver.data.synthetic import SyntheticPanoptic
from maskconver.engine.checkpoint import save_checkpoint
from maskconver.engine.ema import ModelEma

SMALL = [
    "model.backbone.width=8",
    "model.head.channels=16",
    "model.decoder.channels=16",
    "model.head.low_level_channels=16",
    "model.embedding_dim=16",
    "model.mlp_hidden=16",
    "model.num_proposals=8",
    "model.head.num_convs=1",
]
VARIANTS = {
    "aspp": SMALL,
    "fpn": SMALL + ["model.decoder.name=fpn", "model.level=3"],
    "maskconver_fpn_multiscale": SMALL
    + [
        "model.decoder.name=maskconver_fpn",
        "model.multiscale=true",
        "model.decoder.max_level=5",
        "model.max_level=5",
        "model.min_level=3",
        "model.pixel_level=2",
        "model.decoder.separable=true",
        "model.decoder.fusion=concat",
        "model.decoder.norm=ln",
        "targets.level_low=[0,40,80]",
        "targets.level_high=[64,128,10000000]",
    ],
    "hard_sigmoid": SMALL + ["postprocess.hard_sigmoid=true"],
}
out = Path(sys.argv[1])
cats = SyntheticPanoptic(1).categories
torch.manual_seed(0)
images = torch.rand(2, 3, 64, 80) * 255
for name, ov in VARIANTS.items():
    cfg = load_config("tiny", ov)
    torch.manual_seed(1)
    model = build.build_model(cfg.model, cats.num_classes)
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    ema = ModelEma(model, 0.9)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ck = save_checkpoint(
        out / name,
        model=model,
        ema=ema,
        optimizer=None,
        step=3,
        config=cfg,
        categories=cats,
        num_classes=cats.num_classes,
        metrics={"all": {"pq": 0.5}},
    )
    ema.module.eval()
    with torch.no_grad():
        o = ema.module(images)
    save_file(
        {
            "images": images,
            "mask_logits": o.mask_logits,
            "scores": o.scores,
            "classes": o.classes,
            "center_indices": o.center_indices,
            **{f"center_logits_{i}": c.contiguous() for i, c in enumerate(o.center_logits)},
        },
        str(ck / "expected_outputs.safetensors"),
    )
    print(name, ck, sum(p.numel() for p in model.parameters()))
