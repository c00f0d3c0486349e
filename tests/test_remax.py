"""ReMaX in MaskConver: analytic values for S, m_hat, ReClass targets, the semantic target and the
mask-ID loss; the stop-gradient; the auxiliary head outside the inference model; checkpoints.

Every expected number is derived in the test from the definitions in ``losses/remax.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskconver import build
from maskconver.config import ConfigError, load_config
from maskconver.data.types import PanopticSample, SegmentInfo
from maskconver.meta.maskconver.losses import remax
from maskconver.meta.maskconver.losses.criterion import MaskConverCriterion
from maskconver.meta.maskconver.outputs import MaskConverOutput
from maskconver.meta.maskconver.targets.generator import TargetGenerator
from maskconver.meta.maskconver.targets.types import TargetBatch

# ----------------------------------------------------------------------------------------------
# ReMask: S and the relaxed logits


def test_relaxation_factor_by_hand() -> None:
    # 2 classes, a 1x2 image; semantic probs s[c, x]; one slot with class probs q = (0.5, 0.2)
    s = torch.tensor([[[[0.9, 0.1]], [[0.3, 0.6]]]])  # [1, 2, 1, 2]
    q = torch.tensor([[[0.5, 0.2]]])  # [1, 1, 2]
    factor = remax.relaxation_factor(s, q)
    # S(x0) = 0.9*0.5 + 0.3*0.2 = 0.51 ; S(x1) = 0.1*0.5 + 0.6*0.2 = 0.17
    torch.testing.assert_close(factor, torch.tensor([[[[0.51, 0.17]]]]))
    m = torch.tensor([[[[2.0, -1.0]]]])
    torch.testing.assert_close(
        remax.relax_mask_logits(m, factor), torch.tensor([[[[2.0 * 1.51, -1.0 * 1.17]]]])
    )
    torch.testing.assert_close(
        remax.relax_mask_logits(m, factor, identity=False), torch.tensor([[[[1.02, -0.17]]]])
    )


def test_class_probabilities_read_the_heatmap_at_each_center() -> None:
    # two levels: 2x2 then 1x1, two classes; slot 0 at flat index 3 (level 0, (1, 1)),
    # slot 1 at index 4 (level 1, (0, 0))
    level0 = torch.zeros(1, 2, 2, 2)
    level0[0, :, 1, 1] = torch.tensor([1.0, -2.0])
    level1 = torch.tensor([[[[0.5]], [[3.0]]]])
    q = remax.class_probabilities([level0, level1], torch.tensor([[3, 4]]))
    expected = torch.tensor([[1.0, -2.0], [0.5, 3.0]]).sigmoid()[None]
    torch.testing.assert_close(q, expected)
    hard = remax.class_probabilities([level0, level1], torch.tensor([[3, 4]]), hard=True)
    # relu6(x + 3) / 6: 1 -> 4/6, -2 -> 1/6, 0.5 -> 3.5/6, 3 -> 1
    torch.testing.assert_close(hard, torch.tensor([[[4 / 6, 1 / 6], [3.5 / 6, 1.0]]]))


def test_semantic_one_hot_ignores_minus_one() -> None:
    one_hot = remax.semantic_one_hot(torch.tensor([[[0, -1, 2]]]), 3)
    assert one_hot[0, :, 0, :].tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


# ----------------------------------------------------------------------------------------------
# ReClass


def test_class_overlap_is_the_covered_share_of_each_class() -> None:
    # 1x4 image: pixels 0-1 class 0, pixels 2-3 class 1; mask probs (1, 1, 0.5, 0)
    one_hot = remax.semantic_one_hot(torch.tensor([[[0, 0, 1, 1]]]), 3)
    probs = torch.tensor([[[[1.0, 1.0, 0.5, 0.0]]]])
    y = remax.class_overlap(probs, one_hot)
    # class 0: 2 / 2 = 1; class 1: 0.5 / 2 = 0.25; class 2 absent: 0 (eps 1e-5 in the divisor)
    torch.testing.assert_close(y, torch.tensor([[[2 / (2 + 1e-5), 0.5 / (2 + 1e-5), 0.0]]]))


def test_reclass_soft_targets_at_the_center_and_the_positive_stays_one() -> None:
    # one level 3x3, 3 classes; slot 0 is class 0 at (1, 1) with peak 1 in the GT heatmap
    heat = torch.zeros(1, 3, 3, 3)
    heat[0, 0, 1, 1] = 1.0
    heat[0, 2, 1, 1] = 0.05  # an existing larger value must win the max
    overlap = torch.tensor([[[1.0, 0.5, 0.2]]])
    (out,) = remax.reclass_heatmaps(
        [heat], overlap, torch.tensor([[0]]), torch.tensor([[4]]), torch.tensor([[True]]), eta=0.1
    )
    assert out[0, 0, 1, 1] == 1.0  # the positive keeps exactly 1
    assert out[0, 1, 1, 1] == pytest.approx(0.1 * 0.5)  # max(0, eta * y)
    assert out[0, 2, 1, 1] == pytest.approx(max(0.05, 0.1 * 0.2))
    changed = (out != heat).nonzero().tolist()
    assert changed == [[0, 1, 1, 1]]  # nothing else moved (0.05 > 0.02 kept class 2)
    assert heat[0, 1, 1, 1] == 0.0  # the input is not modified


def test_reclass_splat_uses_the_slot_gaussian_and_skips_empty_slots() -> None:
    heat = torch.zeros(1, 2, 5, 5)
    heat[0, 1, 2, 2] = 1.0
    overlap = torch.tensor([[[0.8, 1.0], [1.0, 1.0]]])
    (out,) = remax.reclass_heatmaps(
        [heat],
        overlap,
        torch.tensor([[1, 0]]),
        torch.tensor([[12, 0]]),  # slot 0 at (2, 2); slot 1 empty
        torch.tensor([[True, False]]),
        eta=0.1,
        center_sigma=torch.tensor([[1.0, 5.0]]),
    )
    # class 0 gets 0.1 * 0.8 * exp(-d^2 / 2) around (2, 2); class 1 (own) untouched
    for y, x in [(2, 2), (2, 3), (0, 0)]:
        d2 = (y - 2) ** 2 + (x - 2) ** 2
        assert out[0, 0, y, x] == pytest.approx(0.08 * math.exp(-d2 / 2.0), rel=1e-5)
    assert torch.equal(out[0, 1], heat[0, 1])


# ----------------------------------------------------------------------------------------------
# mask-ID loss and the semantic loss


def test_mask_id_loss_by_hand() -> None:
    # two valid slots, one empty; 1x2 image, slot 0 owns pixel 0, slot 1 owns pixel 1
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]], [[9.0, 9.0]]]])  # [1, 3, 1, 2]
    masks = torch.tensor([[[[1, 0]], [[0, 1]], [[0, 0]]]])
    valid = torch.tensor([[True, True, False]])
    loss = remax.mask_id_loss(logits, masks, valid, torch.ones(1, 1, 2))
    # the empty slot is out of the softmax: pixel 0: -log(e^2 / (e^2 + 1)); pixel 1 likewise e^1
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.e / (math.e + 1))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # a pixel shared by two slots (one stuff class, two islands) has a uniform target
    shared = remax.mask_id_loss(
        torch.zeros(1, 2, 1, 1),
        torch.ones(1, 2, 1, 1),
        torch.tensor([[True, True]]),
        torch.ones(1, 1, 1),
    )
    assert float(shared) == pytest.approx(math.log(2))  # -(0.5 log .5 + 0.5 log .5)
    none = remax.mask_id_loss(logits, masks * 0, valid, torch.ones(1, 1, 2))
    assert float(none) == 0.0


def test_semantic_loss_ignores_and_is_finite_without_labels() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 5.0]]]], requires_grad=True)
    loss = remax.semantic_loss(logits, torch.tensor([[[0, -1]]]))
    assert float(loss) == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-6)
    empty = remax.semantic_loss(logits, torch.tensor([[[-1, -1]]]))
    assert float(empty) == 0.0
    empty.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


# ----------------------------------------------------------------------------------------------
# the semantic target


def _sample() -> PanopticSample:
    """8x8: thing A (id 1, cat 1) rows 0-1, thing B (id 2, cat 1) rows 2-3, crowd (id 3, cat 1)
    rows 4-5 left half, stuff (id 4, cat 2) rows 6-7, void elsewhere, padding at (7, 7)."""
    pan = np.zeros((8, 8), np.int32)
    pan[0:2] = 1
    pan[2:4] = 2
    pan[4:6, :4] = 3
    pan[6:8] = 4
    pan[7, 7] = -1
    segments = [
        SegmentInfo(1, 1, isthing=True),
        SegmentInfo(2, 1, isthing=True),
        SegmentInfo(3, 1, iscrowd=True, isthing=True),
        SegmentInfo(4, 2, isthing=False),
    ]
    return PanopticSample(image=np.zeros((8, 8, 3), np.uint8), panoptic=pan, segments=segments)


def _generator(max_instances: int = 5, stuff_centers: bool = True) -> TargetGenerator:
    return TargetGenerator(
        num_classes=2,
        category_to_class={1: 0, 2: 1},
        thing_category_ids=[1],
        center_strides=[2],
        max_instances=max_instances,
        stuff_center="mass",
        stuff_centers=stuff_centers,
    )


def test_semantic_target_labels_slotted_segments_only() -> None:
    t = _generator()(_sample())
    assert t.semantic is not None and t.semantic.shape == (8, 8)
    sem = t.semantic.numpy()
    assert (sem[0:4] == 0).all()  # both things
    assert (sem[4:6, :4] == -1).all()  # crowd
    assert (sem[4:6, 4:] == -1).all()  # void
    assert (sem[6:8][(np.arange(16).reshape(2, 8) != 15)] == 1).all()  # stuff
    assert sem[7, 7] == -1  # padding
    # the cap keeps things first: with 1 slot, thing B and the stuff lose theirs -> ignored
    capped = _generator(max_instances=1)(_sample()).semantic.numpy()
    assert (capped[0:2] == 0).all() and (capped[2:4] == -1).all() and (capped[6:8] == -1).all()
    # region-based stuff: no stuff slot, but its pixels are labelled
    region = _generator(stuff_centers=False)(_sample())
    assert region.classes.tolist()[:3] == [0, 0, -1]
    assert (region.semantic.numpy()[6, :] == 1).all()
    assert float(region.heatmaps[0][1].max()) == 0.0  # no stuff center drawn
    # the slot sigmas follow gaussian_sigma of each center; empty slots 0
    assert t.center_sigma is not None and (t.center_sigma[:3] > 0).all()
    assert t.center_sigma[3:].tolist() == [0.0, 0.0]


# ----------------------------------------------------------------------------------------------
# the criterion: stop-gradient, ground-truth source, configuration


def _batch() -> tuple[MaskConverOutput, TargetBatch, nn.Module]:
    torch.manual_seed(0)
    targets = TargetBatch.stack([_generator()(_sample())] * 2)
    head = nn.Conv2d(4, 2, 1)
    pixel = torch.randn(2, 4, 4, 4, requires_grad=True)
    center = torch.randn(2, 2, 4, 4, requires_grad=True)
    out = MaskConverOutput(
        center_logits=(center,),
        mask_logits=torch.randn(2, 5, 4, 4, requires_grad=True),
        scores=torch.zeros(2, 5),
        classes=targets.classes.clamp(min=0),
        center_indices=targets.center_indices,
        pixel_embeddings=pixel,
    )
    return out, targets, head


def _criterion(head: nn.Module, **kw: object) -> MaskConverCriterion:
    return MaskConverCriterion(
        num_classes=2,
        semantic_head=head,
        semantic_weight=0.5,
        **kw,  # type: ignore[arg-type]
    )


def test_remask_stop_gradient_keeps_the_heatmap_and_semantic_head_out_of_s() -> None:
    out, targets, head = _batch()
    relaxed = _criterion(head, remask="literal")(out, targets)["loss"]
    relaxed.backward()
    grads = {
        "center": out.center_logits[0].grad.clone(),
        "head": head.weight.grad.clone(),
    }
    # reference: the same losses without any relaxation -> the heatmap and semantic head see
    # only their own terms (focal, semantic CE), which ReMask must not change
    out2, targets2, head2 = _batch()
    head2.load_state_dict(head.state_dict())
    plain = _criterion(head2)(out2, targets2)["loss"]
    plain.backward()
    torch.testing.assert_close(grads["center"], out2.center_logits[0].grad)
    torch.testing.assert_close(grads["head"], head2.weight.grad)
    assert not torch.allclose(relaxed, plain)  # the relaxation did change the mask losses
    # without the stop-gradient, S sends gradient into both
    out3, targets3, head3 = _batch()
    head3.load_state_dict(head.state_dict())
    _criterion(head3, remask="literal", remask_detach=False)(out3, targets3)["loss"].backward()
    assert not torch.allclose(out3.center_logits[0].grad, out2.center_logits[0].grad)
    assert not torch.allclose(head3.weight.grad, head2.weight.grad)


def test_ground_truth_source_and_statistics() -> None:
    out, targets, head = _batch()
    losses = MaskConverCriterion(num_classes=2, remask="literal", remask_source="ground_truth")(
        out, targets
    )
    assert "loss_semantic" not in losses
    # with the one-hot GT map, S_k(x) = q_k[gt(x)]: compare with a direct computation
    q = out.center_logits[0].flatten(2).transpose(1, 2)  # [B, N, C]
    q = q.gather(1, targets.center_indices[:, :, None].expand(-1, -1, 2)).sigmoid()
    gt = F.one_hot(targets.semantic.clamp(min=0), 2).float() * (targets.semantic >= 0)[..., None]
    s = torch.einsum("bhwc,bkc->bkhw", gt, q)
    own = (
        targets.masks.float()
        * targets.mask_valid[:, :, None, None]
        * targets.pixel_weights[:, None]
    )
    assert float(losses["stat_remask_s_own"]) == pytest.approx(float((s * own).sum() / own.sum()))


def test_remax_config_checks() -> None:
    with pytest.raises(ConfigError, match="model.maskconver.loss.semantic_weight > 0"):
        load_config("tiny", ["model.maskconver.loss.remask=literal"])
    load_config(
        "tiny",
        [
            "model.maskconver.loss.remask=literal",
            "model.maskconver.loss.remask_source=ground_truth",
        ],
    )
    with pytest.raises(ConfigError, match="stuff_mode=region"):
        load_config("tiny", ["model.maskconver.stuff_mode=region"])
    with pytest.raises(ConfigError, match="reclass_eta"):
        load_config("tiny", ["model.maskconver.loss.reclass_eta=1.5"])


# ----------------------------------------------------------------------------------------------
# free at inference


REMAX = [
    "model.maskconver.loss.semantic_weight=0.5",
    "model.maskconver.loss.remask=literal+maskid",
    "model.maskconver.loss.reclass_eta=0.1",
]


def test_the_auxiliary_head_is_not_part_of_the_model() -> None:
    from maskconver.benchmarking.measure import benchmark

    plain_cfg, remax_cfg = load_config("tiny"), load_config("tiny", REMAX)
    torch.manual_seed(0)
    plain = build.build_model(plain_cfg.model, 7)
    torch.manual_seed(0)
    relaxed = build.build_model(remax_cfg.model, 7)
    assert plain.state_dict().keys() == relaxed.state_dict().keys()
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        a, b = plain.eval()(images), relaxed.eval()(images)
    assert torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.scores, b.scores)
    criterion = build.build_criterion(remax_cfg, 7)
    assert sum(p.numel() for p in criterion.parameters()) > 0  # the head lives here
    assert sum(p.numel() for p in build.build_criterion(plain_cfg, 7).parameters()) == 0
    r1 = benchmark("tiny", [], runs=0, num_classes=7)
    r2 = benchmark("tiny", REMAX, runs=0, num_classes=7)
    assert (r1["params"], r1["macs"]) == (r2["params"], r2["macs"])


def test_a_remax_checkpoint_predicts_and_evaluates(tmp_path: Path) -> None:
    from maskconver.engine.checkpoint import latest_checkpoint
    from maskconver.engine.train import train
    from maskconver.predictor import Predictor

    cfg = load_config(
        "tiny",
        [
            *REMAX,
            "train.max_steps=2",
            "train.batch_size=2",
            "train.warmup_steps=0",
            "augment.input_size=[64, 64]",
            "eval.input_size=64",
            "data.synthetic_train=4",
            "data.synthetic_val=2",
            "train.max_eval_images=2",
        ],
    )
    summary = train(cfg, tmp_path / "run", progress=False)
    assert "loss_semantic" in summary["final_losses"] and "loss_maskid" in summary["final_losses"]
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and (ckpt / "criterion.safetensors").is_file()
    predictor = Predictor.from_checkpoint(ckpt)
    result = predictor(np.zeros((40, 50, 3), np.uint8))
    assert result.panoptic.shape == (40, 50)
    from maskconver.cli import main
    from maskconver.data.synthetic import write_synthetic_dataset

    root = tmp_path / "data"
    write_synthetic_dataset(root, train=0, val=2, seed=1, progress=False)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data-root", str(root)]) == 0


# ----------------------------------------------------------------------------------------------
# the recipe pieces: step schedule, no class embedding, region-based stuff


def test_step_schedule_values() -> None:
    from maskconver.engine.optim import lr_at

    kw = {
        "base_lr": 0.5,
        "warmup_steps": 10,
        "total_steps": 100,
        "schedule": "step",
        "steps_at": (0.85, 0.95),
        "step_factor": 0.1,
    }
    assert lr_at(5, **kw) == pytest.approx(0.25)  # warmup: halfway to 0.5
    assert lr_at(84, **kw) == pytest.approx(0.5)
    assert lr_at(85, **kw) == pytest.approx(0.05)  # first boundary floor(0.85 * 100)
    assert lr_at(95, **kw) == pytest.approx(0.005)


def test_fusion_none_has_no_class_embedding() -> None:
    cfg = load_config("tiny", ["model.maskconver.fusion=none"])
    model = build.build_model(cfg.model, 7)
    assert model.mask_embedding.class_embedding is None
    assert not any("class_embedding" in k for k in model.state_dict())
    out = model.eval()(torch.rand(1, 3, 64, 64) * 255)
    assert out.mask_logits.shape[:2] == (1, cfg.model.num_proposals)


def test_region_stuff_comes_from_the_semantic_head() -> None:
    from maskconver.meta.maskconver.postprocess import PanopticPostProcessor, semantic_stuff
    from maskconver.postprocess.merge import MergeCore

    cfg = load_config(
        "tiny", ["model.maskconver.stuff_mode=region", "model.maskconver.loss.semantic_weight=1.0"]
    )
    model = build.build_model(cfg.model, 3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64) * 255)
    assert out.semantic_logits is not None and out.semantic_logits.shape[:2] == (1, 3)
    # hand-built: class 2 (stuff) wins the right half, class 1 (stuff) the left; a thing owns
    # the first column -> stuff segments on the rest, min_area filter
    logits = torch.zeros(3, 4, 4)
    logits[2, :, 2:] = 5.0
    logits[1, :, :2] = 5.0
    owner = torch.full((4, 4), -1)
    owner[:, 0] = 0
    stuff_map, scores = semantic_stuff(
        logits,
        owner,
        torch.tensor([False, True, True]),
        input_size=(4, 4),
        valid_size=(4, 4),
        output_size=(4, 4),
        min_area=3,
    )
    assert (stuff_map[:, 0] == -1).all() and (stuff_map[:, 1] == 1).all()
    assert (stuff_map[:, 2:] == 2).all()
    assert set(scores) == {1, 2}
    pp = PanopticPostProcessor(
        class_to_category=[5, 6, 7],
        is_thing_class=[True, False, False],
        min_area=0,
        stuff_from_semantic=True,
    )
    assert pp.class_usable.tolist() == [True, False, False]  # stuff proposals are ignored
    core = MergeCore(
        owner, torch.tensor([True]), torch.tensor([0]), torch.tensor([0.9]), torch.tensor([4])
    )
    from maskconver.meta.maskconver.postprocess import number_segments

    pred = number_segments(
        core,
        class_to_category=[5, 6, 7],
        is_thing_class=[True, False, False],
        stuff=(stuff_map, scores),
    )
    assert [(s.category_id, s.isthing, s.area) for s in pred.segments] == [
        (5, True, 4),
        (6, False, 4),
        (7, False, 8),
    ]
