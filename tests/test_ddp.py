"""Two CPU processes (torchrun, gloo, gradient accumulation) train 3 steps; weights agree."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from maskconver.build import build_model
from maskconver.config import load_config
from maskconver.data.synthetic import synthetic_categories

OVERRIDES = [
    "train.max_steps=3",
    "train.batch_size=8",  # global: 4 images per rank in 2 micro-batches of 2
    "train.grad_accum=2",  # exercises DDP no_sync on the first micro-batch
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.max_eval_images=2",
    "augment.input_size=[64,64]",
    "data.synthetic_train=8",
    "data.synthetic_val=2",
    "data.synthetic_min_size=64",
    "data.synthetic_max_size=80",
    "eval.input_size=64",
    "eval.batch_size=1",
]

# Run by torchrun in each process: train through the public API, capture the bare model that
# ``train`` builds, and save its state per rank.
WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import maskconver.engine.train as train_module
    from maskconver.config import load_config

    out, states, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    built, criteria = [], []
    real_build_model = train_module.build_model
    real_build_criterion = train_module.build_criterion

    def capture(*args, **kwargs):
        model = real_build_model(*args, **kwargs)
        built.append(model)
        return model

    def capture_criterion(*args, **kwargs):
        criterion = real_build_criterion(*args, **kwargs)
        criteria.append(criterion)
        return criterion

    train_module.build_model = capture
    train_module.build_criterion = capture_criterion
    torch.set_num_threads(1)
    summary = train_module.train(load_config("tiny", overrides), out, progress=False)
    rank = os.environ["RANK"]
    assert summary["steps"] == 3, summary
    torch.save(
        {
            "params": dict(built[0].named_parameters()),
            "criterion": dict(criteria[0].named_parameters()),
            "pq": summary["pq"],
        },
        os.path.join(states, f"rank{rank}.pt"),
    )
    """
)


def _torchrun(script: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        cmd + [str(script), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


# ReMaX: the criterion's auxiliary semantic head is trained under DDP too
REMAX = [
    "model.maskconver.loss.semantic_weight=0.5",
    "model.maskconver.loss.remask=literal",
    "model.maskconver.loss.reclass_eta=0.1",
]


# kMaX-DeepLab with ReMaX at toy widths: Hungarian matching per rank, the criterion's heads
KMAX = [
    "model.meta_architecture=kmax",
    "model.kmax.decoder_channels=[32,16,16,16]",
    "model.kmax.axial_heads=2",
    "model.kmax.transformer_blocks=[1,1,1]",
    "model.kmax.query_dim=16",
    "model.kmax.pixel_dim=8",
    "model.kmax.attention_heads=2",
    "model.kmax.ffn_dim=16",
    "model.kmax.loss.instance_points=64",
    "model.kmax.loss.semantic_points=64",
    "model.kmax.loss.semantic_channels=8",
    "model.kmax.loss.semantic_rates=[1,2,3]",
    "model.kmax.loss.remask_stages=2",
    "model.kmax.loss.reclass_eta=0.1",
    "model.num_proposals=8",
]


@pytest.mark.parametrize("extra", [[], REMAX, KMAX], ids=["plain", "remax", "kmax"])
def test_two_process_training_keeps_weights_identical(tmp_path: Path, extra: list[str]) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    states = tmp_path / "states"
    states.mkdir()
    out = tmp_path / "run"
    proc = _torchrun(script, str(out), str(states), *OVERRIDES, *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rank0 = torch.load(states / "rank0.pt", weights_only=True)
    rank1 = torch.load(states / "rank1.pt", weights_only=True)
    assert rank0["params"].keys() == rank1["params"].keys()
    # DDP averages gradients before every optimizer step and starts from rank 0's weights, so
    # parameters agree exactly. (BN running statistics are not compared: each rank updates them
    # from its own half of the batch in the last forward; DDP re-broadcasts them next forward.)
    for name, value in rank0["params"].items():
        torch.testing.assert_close(rank1["params"][name], value, rtol=0, atol=0, msg=name)
    assert bool(rank0["criterion"]) == bool(extra)  # the head exists only with ReMaX
    for name, value in rank0["criterion"].items():
        torch.testing.assert_close(rank1["criterion"][name], value, rtol=0, atol=0, msg=name)
    # the ranks evaluated their shards and all-reduced PQ: same number everywhere
    assert rank0["pq"] == rank1["pq"]

    # training really moved the weights away from the seeded initialisation
    cfg = load_config("tiny", OVERRIDES + extra)
    torch.manual_seed(cfg.train.seed)
    init = build_model(cfg.model, synthetic_categories().num_classes)
    moved = [
        name
        for name, p in init.named_parameters()
        if not torch.equal(p.detach(), rank0["params"][name])
    ]
    assert len(moved) > len(rank0["params"]) // 2
    # rank 0 alone wrote the run directory; logs report all 3 steps
    assert (out / "checkpoints" / "step_000003" / "model.safetensors").is_file()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "train"' in line for line in lines) == 3


@pytest.mark.slow
def test_cli_under_torchrun(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "maskconver",
        "train",
        "--config",
        "tiny",
        "--output-dir",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    for item in OVERRIDES:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count('"steps": 3') == 1  # the summary is printed once (rank 0)
