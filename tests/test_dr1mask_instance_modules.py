"""DR1Mask's instance prediction modules (``meta/dr1mask/instance_modules.py``).

Analytic cases: the blender's softmax weights, the factored attention of a hand-built full
attention (rank R: exact), the parameter counts against their formulas (BlendMask's "196
parameters per channel"), the GT-box mask queries; contracts over the build table: shapes,
gradients through the whole model, the top layer's width following from the module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskconver import build
from maskconver.config import load_config
from maskconver.data.synthetic import SyntheticPanoptic
from maskconver.engine.loader import collate_train
from maskconver.engine.step import TrainingModule
from maskconver.meta.dr1mask.build import INSTANCE_MODULES, build_instance_module
from maskconver.meta.dr1mask.instance_modules import (
    FactoredAttention,
    FullAttention,
    InstanceModule,
    VectorEmbedding,
    blend,
    mask_queries,
    positive_mask_logits,
)

D, K, R, M = 3, 2, 3, 6


def test_blend_weights_the_bases_by_the_softmax_over_k() -> None:
    # attention logits log(3) and 0 everywhere: softmax weights 3/4 and 1/4
    bases = torch.stack([torch.full((M, M), 2.0), torch.full((M, M), -4.0)])[None]
    attention = torch.stack([torch.full((R, R), math.log(3.0)), torch.zeros(R, R)])[None]
    out = blend(bases, attention)
    assert out.shape == (1, M, M)
    torch.testing.assert_close(out, torch.full((1, M, M), 0.75 * 2.0 + 0.25 * -4.0))


def test_vector_embedding_is_the_weighted_channel_sum() -> None:
    crops = torch.randn(1, D, M, M)
    e = torch.tensor([[1.0, -2.0, 0.5]])
    expected = crops[0, 0] - 2 * crops[0, 1] + 0.5 * crops[0, 2]
    torch.testing.assert_close(VectorEmbedding(D).mask_logits(e, crops)[0], expected)


def test_factored_attention_of_full_rank_equals_the_full_attention_it_factors() -> None:
    torch.manual_seed(0)
    attention = torch.randn(K, R, R)  # the full attention of one instance
    kernels = torch.randn(K, D)  # its projection of the D basis channels to K
    u, s, vh = torch.linalg.svd(attention)  # A_k = U_k diag(s_k) V_k^T, rank R
    factored = FactoredAttention(D, num_bases=K, attention_size=R, rank=R)
    with torch.no_grad():
        factored.u.copy_(u)
        factored.v.copy_(vh.transpose(1, 2))
    full = FullAttention(D, num_bases=K, attention_size=R)
    with torch.no_grad():  # the static projection of the full module = the instance's kernels
        full.bases.weight.copy_(kernels[:, :, None, None])
        full.bases.bias.zero_()
    crops = torch.randn(1, D, M, M)
    e_factored = torch.cat([kernels.flatten(), s.flatten()])[None]
    e_full = torch.cat([torch.zeros(D), attention.flatten()])[None]
    torch.testing.assert_close(factored.attention(e_factored)[0], attention, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        factored.mask_logits(e_factored, crops),
        full.mask_logits(e_full, crops),
        atol=1e-5,
        rtol=0,
    )


def test_parameter_counts_follow_the_formulas() -> None:
    # BlendMask: K = 4 bases, 14 x 14 attention: "196 parameters per channel", 784 in all
    d, k, r, rank = 64, 4, 14, 4
    full = FullAttention(d, num_bases=k, attention_size=r)
    assert full.mask_parameters == 784 == k * 196
    assert full.embedding_dim == d + 784  # the unified column + the attention
    assert sum(p.numel() for p in full.parameters()) == k * d + k  # the 1x1 basis projection
    factored = FactoredAttention(d, num_bases=k, attention_size=r, rank=rank)
    assert factored.mask_parameters == factored.embedding_dim == k * d + k * rank == 272
    assert sum(p.numel() for p in factored.parameters()) == 2 * k * r * rank  # U_k, V_k
    vector = VectorEmbedding(d)
    assert vector.mask_parameters == vector.embedding_dim == d
    assert not list(vector.parameters())
    with pytest.raises(ValueError, match="rank"):
        FactoredAttention(d, num_bases=k, attention_size=r, rank=r + 1)


def _modules() -> list[InstanceModule]:
    return [
        VectorEmbedding(D),
        FactoredAttention(D, num_bases=K, attention_size=R, rank=2),
        FullAttention(D, num_bases=K, attention_size=R),
    ]


@pytest.mark.parametrize("index", range(3), ids=["vector", "factored", "full"])
def test_module_shapes_and_gradients(index: int) -> None:
    module = _modules()[index]
    n = 5
    e = torch.randn(n, module.embedding_dim, requires_grad=True)
    crops = torch.randn(n, D, M, M, requires_grad=True)
    out = module.mask_logits(e, crops)
    assert out.shape == (n, M, M)
    shared = torch.randn(1, D, M, M)  # one RoI read by n embeddings: the same as repeating it
    torch.testing.assert_close(
        module.mask_logits(e, shared), module.mask_logits(e, shared.expand(n, -1, -1, -1))
    )
    assert module.unified_column(e).shape == (n, D)
    assert module.unified_column(e[None]).shape == (1, n, D)  # any leading dims
    (out.square().sum() + module.unified_column(e).sum()).backward()
    assert e.grad is not None and e.grad.abs().sum() > 0
    assert crops.grad is not None and crops.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_factored_unified_column_is_the_mean_projection_kernel() -> None:
    module = FactoredAttention(D, num_bases=K, attention_size=R, rank=2)
    kernels = torch.arange(K * D, dtype=torch.float32).view(K, D)
    e = torch.cat([kernels.flatten(), torch.zeros(K * 2)])[None]
    torch.testing.assert_close(module.unified_column(e)[0], kernels.mean(0))


def test_mask_queries_group_the_positives_by_roi() -> None:
    # image 0: slots 0 (valid), 1 (invalid); image 1: slot 0 (valid)
    boxes = torch.tensor([[[0.0, 0, 4, 4], [1, 1, 2, 2]], [[2.0, 2, 6, 6], [0, 0, 0, 0]]])
    valid = torch.tensor([[True, False], [True, False]])
    labels = torch.tensor([[0, 1, -1, 0], [2, -1, -1, 2]])
    gt_index = torch.tensor([[0, 1, -1, 0], [0, -1, -1, 0]])
    q = mask_queries(boxes, valid, labels, gt_index)
    torch.testing.assert_close(q.boxes, torch.tensor([[0.0, 0, 4, 4], [2.0, 2, 6, 6]]))
    assert q.roi_image.tolist() == [0, 1] and q.roi_slot.tolist() == [0, 0]
    # location 1 of image 0 belongs to the invalid slot 1: no query
    assert q.image.tolist() == [0, 0, 1, 1]
    assert q.location.tolist() == [0, 3, 0, 3]
    assert q.roi.tolist() == [0, 0, 1, 1]


def test_positive_mask_logits_read_each_positive_in_its_gt_box() -> None:
    basis = torch.randn(2, D, 8, 8)
    embeddings = torch.randn(2, 4, D)
    boxes = torch.tensor([[[0.0, 0, 16, 16]], [[8.0, 8, 32, 32]]])
    q = mask_queries(
        boxes,
        torch.tensor([[True], [True]]),
        torch.tensor([[0, -1, 0, -1], [-1, 1, -1, -1]]),
        torch.tensor([[0, -1, 0, -1], [-1, 0, -1, -1]]),
    )
    vector = VectorEmbedding(D)
    out = positive_mask_logits(
        vector.mask_logits, basis, embeddings, q, mask_size=4, basis_stride=4
    )
    assert out.shape == (3, 4, 4)
    from maskconver.meta.dr1mask.roi_align import corner_shift, roi_align

    crop = roi_align(
        basis, boxes[1] + corner_shift(4), torch.tensor([1]), 4, spatial_scale=0.25
    )  # image 1's RoI, read by its positive at location 1
    torch.testing.assert_close(out[2], torch.einsum("d,dpq->pq", embeddings[1, 1], crop[0]))


@pytest.mark.parametrize("name", sorted(INSTANCE_MODULES))
def test_every_table_entry_trains_the_whole_model(name: str) -> None:
    cfg = load_config(
        "dr1mask_small",
        [
            f"model.dr1mask.instance_module={name}",
            "model.dr1mask.attention_size=7",
            "augment.input_size=[64, 64]",
            "model.dr1mask.mask_size=14",
            "train.batch_size=2",
        ],
    )
    data = SyntheticPanoptic(2, seed=3, min_size=70, max_size=110)
    cats = data.categories
    module = build_instance_module(cfg.model)
    model = build.build_model(cfg.model, cats.num_classes)
    assert type(model.instance_module) is type(module)
    width = model.top_layer.conv.out_channels
    assert width == module.embedding_dim + 2 * cfg.model.dr1mask.basis_width  # e, A_l, B_l
    generator = build.build_target_generator(cfg, cats, cats.num_classes)
    transform = build.build_train_transforms(cfg)
    rng = np.random.default_rng(0)
    items = []
    for i in range(2):
        sample = transform(data[i], rng)
        image = torch.from_numpy(sample.image.copy()).permute(2, 0, 1).float()
        items.append((image, generator(sample)))
    images, targets, _ = collate_train(items)
    torch.manual_seed(0)
    meta = build.meta_architecture(cfg.model)
    step = TrainingModule(
        model, build.build_criterion(cfg, cats.num_classes), teacher_forward=meta.teacher_forward
    ).train()
    losses = step(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] > 0
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:10]}"
    model.eval()
    with torch.no_grad():
        out = model(images)
    k = cfg.model.num_proposals
    assert out.detection_masks is not None and out.detection_masks.shape == (2, k, 0, 0)
    assert out.panoptic_logits is not None
    assert out.panoptic_logits.shape[1] == cats.num_classes + k


@pytest.mark.parametrize("name", sorted(INSTANCE_MODULES))
def test_instance_task_models_return_the_detections_crop_masks(name: str) -> None:
    cfg = load_config(
        "dr1mask_small_instance",
        [f"model.dr1mask.instance_module={name}", "model.dr1mask.mask_size=14"],
    )
    model = build.build_model(cfg.model, 7).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64) * 255)
    k = cfg.model.num_proposals
    assert out.detection_masks is not None and out.detection_masks.shape == (2, k, 14, 14)
    assert out.boxes is not None and out.detection_embeddings is not None
    # the masks are the module's on the crops of F in the detection boxes
    expected = model.crop_masks(out.basis, out.boxes, out.detection_embeddings)
    torch.testing.assert_close(out.detection_masks, expected)
