"""Sharded ``predict`` under ``torchrun`` (2 gloo processes on CPU) and ``--resume``.

Two processes must write what one writes (``predictions.json`` and every PNG byte-equal); a
rerun with ``--resume`` redoes only the images whose outputs were removed; a run killed with
SIGKILL part-way resumes from its journal and ends with the same files as an uninterrupted run.
The model is an untrained tiny checkpoint with its merge opened up (every threshold 0).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import save_untrained_tiny

from maskconver.cli import main
from maskconver.data.image_io import save_image
from maskconver.data.synthetic import SyntheticPanoptic
from maskconver.sharded import STATE_DIR, Shard

NUM_IMAGES = 24
SUBPROCESS_TIMEOUT_S = 180
POLL_S = 0.002


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny checkpoint (64 px eval size, opened-up merge)."""
    return save_untrained_tiny(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    source = SyntheticPanoptic(NUM_IMAGES, seed=3, min_size=32, max_size=48)
    for i in range(NUM_IMAGES):
        save_image(folder / f"im{i:02d}.png", source[i].image)
    return folder


def predict_args(checkpoint: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [
        "predict",
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(images),
        "--output",
        str(out),
        "--batch-size",
        "2",
        "--threads",
        "1",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(checkpoint: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What one plain process writes."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(predict_args(checkpoint, images, out)) == 0
    return out


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "MASKCONVER_DEBUG": "1"}


def assert_same_outputs(out: Path, reference: Path) -> None:
    assert (out / "predictions.json").read_bytes() == (reference / "predictions.json").read_bytes()
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names  # no journal, lock or temp left
    for name in names:
        if name.endswith(".png"):
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_shard_takes_every_world_size_th_item() -> None:
    items = list(range(7))
    shards = [Shard(rank=r, world_size=3).take(items) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(shards, [])) == items
    assert Shard(rank=1, world_size=2, local_rank=1).device("cuda") == "cuda:1"
    assert Shard().device("cuda") == "cuda"


def test_two_gloo_processes_write_what_one_writes(
    checkpoint: Path, images: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    command = [*launch, "-m", "maskconver", *predict_args(checkpoint, images, out)]
    done = subprocess.run(
        command, env=child_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{NUM_IMAGES} image(s) predicted by 2 process(es)" in done.stdout
    assert_same_outputs(out, reference)


def test_resume_redoes_only_the_removed_outputs(
    checkpoint: Path,
    images: Path,
    reference: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "im03.png").unlink()
    (out / "im07_overlay.jpg").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if "im03" not in p.name}
    kept = {k: v for k, v in kept.items() if "im07" not in k and k != "predictions.json"}
    assert main(predict_args(checkpoint, images, out, "--resume")) == 0
    assert (
        f"2 image(s) predicted by 1 process(es), {NUM_IMAGES - 2} kept" in capsys.readouterr().out
    )
    assert_same_outputs(out, reference)
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # not rewritten
    # a plain rerun still refuses the finished folder; --resume with --overwrite is refused
    assert main(predict_args(checkpoint, images, out)) == 2
    assert main(predict_args(checkpoint, images, out, "--resume", "--overwrite")) == 2


def test_a_killed_run_resumes_from_its_journal(
    checkpoint: Path,
    images: Path,
    reference: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "maskconver", *predict_args(checkpoint, images, out)]
    journal = out / STATE_DIR / "rank0.jsonl"
    child = subprocess.Popen(
        [*command, "--resume", "--batch-size", "1"],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    try:
        while child.poll() is None and time.monotonic() < deadline:
            if journal.is_file() and '"done"' in journal.read_text():
                break
            time.sleep(POLL_S)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=SUBPROCESS_TIMEOUT_S)
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "predictions.json").exists()
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.endswith("}")]
    finished = sum("done" in line for line in lines)
    assert 1 <= finished < NUM_IMAGES
    assert main(predict_args(checkpoint, images, out, "--resume")) == 0
    redone = NUM_IMAGES - finished
    assert (
        f"{redone} image(s) predicted by 1 process(es), {finished} kept" in capsys.readouterr().out
    )
    assert_same_outputs(out, reference)
