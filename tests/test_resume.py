"""The training loop end to end on tiny settings: resume == uninterrupted, NaN stop, dir guard."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import maskconver.engine.train as train_module
from maskconver.config import Config, load_config
from maskconver.engine.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from maskconver.engine.logging import read_metrics
from maskconver.engine.train import NonFiniteLossError, train

TINY_RUN = [
    "train.max_steps=6",
    "train.batch_size=2",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.ckpt_every=100",
    "train.max_eval_images=2",
    "augment.input_size=[64,64]",
    "data.synthetic_train=8",
    "data.synthetic_val=2",
    "data.synthetic_min_size=64",
    "data.synthetic_max_size=80",
    "eval.input_size=64",
    "eval.batch_size=2",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: fast on a loaded 2-core machine and bit-reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(*extra: str) -> Config:
    return load_config("tiny", TINY_RUN + list(extra))


def _losses(run: Path) -> dict[int, dict[str, float]]:
    return {
        r["step"]: {k: v for k, v in r.items() if k.startswith(("loss", "stat_"))}
        for r in read_metrics(run)
        if r["kind"] == "train"
    }


REMAX = [
    "model.maskconver.loss.semantic_weight=0.5",
    "model.maskconver.loss.remask=literal+maskid",
    "model.maskconver.loss.reclass_eta=0.1",
]


@pytest.mark.parametrize("extra", [[], REMAX], ids=["plain", "remax"])
def test_resume_reproduces_uninterrupted_run(tmp_path: Path, extra: list[str]) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    summary = train(_cfg(*extra), full, progress=False)
    assert summary["steps"] == 6 and summary["pq"] is not None
    assert summary["images_per_s"] > 0

    # "pre-empted" after step 3; this half loads data in 2 worker processes, which must not
    # change a thing (sample randomness is keyed by (seed, epoch, index), not by worker)
    first = train(_cfg("data.num_workers=2", *extra), split, progress=False, stop_at=3)
    assert first["steps"] == 3 and first["pq"] is None  # no final evaluation when stopped early
    assert latest_checkpoint(split).name == "step_000003"
    second = train(_cfg(*extra), split, resume=True, progress=False)
    assert second["start_step"] == 3 and second["steps"] == 6

    expected, got = _losses(full), _losses(split)
    assert sorted(expected) == sorted(got) == [1, 2, 3, 4, 5, 6]
    assert ("loss_semantic" in expected[1]) == bool(extra)
    for step in range(1, 7):
        for term, value in expected[step].items():
            assert got[step][term] == pytest.approx(value, rel=0, abs=1e-6), (step, term)
    # the losses actually change between steps (the comparison is not vacuous)
    assert len({round(v["loss"], 6) for v in expected.values()}) > 1

    a, b = load_checkpoint(full), load_checkpoint(split)
    assert a.step == b.step == 6
    for name, tensor in a.model_state.items():
        torch.testing.assert_close(b.model_state[name], tensor, rtol=0, atol=1e-6)
    for name, tensor in a.ema_state.items():
        torch.testing.assert_close(b.ema_state[name], tensor, rtol=0, atol=1e-6)
    assert (a.criterion_state is not None) == bool(extra)
    for name, tensor in (a.criterion_state or {}).items():
        torch.testing.assert_close(b.criterion_state[name], tensor, rtol=0, atol=1e-6)
    # eval record at the end, with PQ fractions, on both runs
    evals = [r for r in read_metrics(full) if r["kind"] == "eval"]
    assert len(evals) == 1 and 0.0 <= evals[0]["all/pq"] <= 1.0
    assert (full / "config.yaml").is_file()


def test_fresh_run_refuses_checkpoints_and_resume_refuses_another_model(tmp_path: Path) -> None:
    train(_cfg("train.max_steps=1", "train.ema=false"), tmp_path, progress=False, stop_at=1)
    with pytest.raises(FileExistsError, match="--resume"):
        train(_cfg("train.max_steps=1"), tmp_path, progress=False)
    with pytest.raises(
        CheckpointError, match="step_000001.*model.maskconver.embedding_dim: 32 -> 16"
    ):
        train(
            _cfg("train.max_steps=2", "model.maskconver.embedding_dim=16"),
            tmp_path,
            resume=True,
            progress=False,
        )


UNUSED_BLOCK_CHANGE = {
    "tiny": "model.dr1mask.top_kernel=5",
    "dr1mask_small": "model.maskconver.embedding_dim=8",
}


@pytest.mark.parametrize("arch", ["tiny", "dr1mask_small"])
def test_resume_compares_the_network_not_the_targets_losses_or_merge(
    arch: str, tmp_path: Path
) -> None:
    import json

    from maskconver.config import dump_config
    from maskconver.engine.checkpoint import FORMAT_VERSION
    from maskconver.engine.run_dir import check_resumable

    (tmp_path / "meta.json").write_text(json.dumps({"format": FORMAT_VERSION}))
    (tmp_path / "config.yaml").write_text(dump_config(load_config(arch)))
    # settings that sat outside `model` before checkpoint format 3 may change on resume
    check_resumable(
        tmp_path,
        load_config(
            arch,
            [
                "model.maskconver.loss.bce_weight=1",
                "model.maskconver.targets.mask_stride=4",
                "model.maskconver.merge.min_area=1",
                "model.dr1mask.merge.object_threshold=0.9",
                "model.dr1mask.merge.mode=paste",
                # the sub-block of the architecture not in use is not part of the network
                "model.maskconver.embedding_dim=8"
                if arch != "tiny"
                else "model.dr1mask.top_kernel=5",
            ],
        ),
    )
    for changed, shown in [
        ("model.num_proposals=7", "model.num_proposals: .* -> 7"),
        (
            ("model.maskconver.embedding_dim=8", "model.maskconver.embedding_dim: .* -> 8")
            if arch == "tiny"
            else ("model.dr1mask.basis_width=16", "model.dr1mask.basis_width: .* -> 16")
        ),
    ]:
        with pytest.raises(CheckpointError, match=shown):
            check_resumable(tmp_path, load_config(arch, [changed]))


class _NaNAfter(nn.Module):
    """Wraps the real criterion; from call ``bad_call`` on, ``loss_bce`` (and the total) is NaN."""

    def __init__(self, inner: nn.Module, bad_call: int) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.bad_call = bad_call

    def forward(self, outputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        self.calls += 1
        losses = dict(self.inner(outputs, targets))
        if self.calls >= self.bad_call:
            losses["loss_bce"] = losses["loss_bce"] * float("nan")
            losses["loss"] = losses["loss"] + losses["loss_bce"]
        return losses


def test_non_finite_loss_stops_with_step_and_terms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_module.build_criterion
    monkeypatch.setattr(train_module, "build_criterion", lambda cfg, n: _NaNAfter(real(cfg, n), 2))
    with pytest.raises(NonFiniteLossError) as info:
        train(_cfg("train.max_steps=3", "train.ema=false"), tmp_path, progress=False)
    message = str(info.value)
    assert "step 2" in message  # second optimizer step (1-based, as in the logs)
    assert "loss_bce=nan" in message and "loss=nan" in message
    assert "loss_center=" in message and "loss_dice=" in message  # every term is named
    assert isinstance(info.value, FloatingPointError)


def test_unreadable_coco_image_stops_or_is_skipped(
    tmp_path: Path, synthetic_coco_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from maskconver.data.coco_panoptic import DatasetError

    root = tmp_path / "coco"
    shutil.copytree(synthetic_coco_root, root)
    broken = sorted((root / "train2017").iterdir())[0]
    broken.write_bytes(b"not a jpeg")
    # 4 steps x 2 images = 8 > 6 train images: every image, the broken one included, is drawn
    run = ["train.max_steps=4", "train.max_eval_images=1"]
    with pytest.raises(DatasetError, match=broken.stem):
        train(
            _cfg(*run, "train.ema=false"), tmp_path / "strict", data_root=str(root), progress=False
        )
    summary = train(
        _cfg(*run, "train.ema=false", "data.skip_bad_samples=true"),
        tmp_path / "lenient",
        data_root=str(root),
        progress=False,
    )
    assert summary["steps"] == 4 and summary["skipped_samples"] >= 1
    assert broken.stem in caplog.text  # logged with the image id


def test_single_image_micro_batch_with_aspp_is_refused(tmp_path: Path) -> None:
    from maskconver.config import ConfigError

    with pytest.raises(ConfigError, match="grad_accum=2 leaves 1 image"):
        train(_cfg("train.grad_accum=2"), tmp_path, progress=False)
