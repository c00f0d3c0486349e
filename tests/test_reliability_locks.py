"""Issue 22, class 3: one writer per run folder or artefact (``maskconver.locking``).

Every command that writes a run folder or an artefact holds a lock file while it writes: a second
writer fails at once with one line naming the lock file (exit 2); a stale lock (a dead pid, a pid
reused by another process, another boot) is replaced; a folder left by a killed ``predict`` is
named and ``--overwrite`` replaces it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ONE_STEP_RUN, write_random_images

from maskconver.cli import main
from maskconver.engine.checkpoint import latest_checkpoint
from maskconver.errors import EXIT_BAD_INPUT
from maskconver.locking import (
    LockOwner,
    boot_id,
    file_lock,
    folder_lock,
    owner_alive,
    process_start_time,
    read_owner,
)

SMALL = ONE_STEP_RUN


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(out: Path, *extra: str) -> int:
    argv = ["train", "--config", "tiny", "--output-dir", str(out), "--no-progress"]
    return main([*argv, *extra, "--set", *SMALL])


def _dead_pid() -> int:
    code = "import os; print(os.getpid())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout)


def _refused(capsys: pytest.CaptureFixture[str], lock: Path, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"another maskconver {command} (pid {os.getpid()})" in err, err
    assert f"lock file {lock}" in err, err
    return err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("locks_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _train(run) == 0
    finally:
        torch.set_num_threads(threads)
    assert not (run / ".maskconver-train.lock").exists()  # released at the end
    found = latest_checkpoint(run)
    assert found is not None
    return found


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_train_into_a_locked_run_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], resume: bool
) -> None:
    out = tmp_path / "run"
    with folder_lock(out, "train") as lock:  # a live train writing there (this process)
        code = _train(out, *(["--resume"] if resume else []))
        assert lock.path.exists()  # the refused run leaves the holder's lock alone
    assert code == EXIT_BAD_INPUT
    _refused(capsys, out / ".maskconver-train.lock", "train")
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()
    assert not out.exists()  # the lock's own folder goes with it: nothing was written


def test_a_stale_train_lock_is_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".maskconver-train.lock"
    reused = {  # this very pid, but another process's start time: the pid was reused
        "pid": os.getpid(),
        "started": "1",
        "host": socket.gethostname(),
        "boot": boot_id(),
        "command": "train",
    }
    lock.write_text(json.dumps(reused))
    assert _train(out) == 0
    assert latest_checkpoint(out) is not None and not lock.exists()
    capsys.readouterr()


def test_lock_owner_liveness() -> None:
    me = os.getpid()
    started = process_start_time(me)
    assert started is not None  # Linux: /proc/<pid>/stat
    host, boot = socket.gethostname(), boot_id()
    assert owner_alive(LockOwner(pid=me, started=started, host=host, boot=boot))
    assert owner_alive(LockOwner(pid=me))  # an old bare-pid lock of a live pid
    assert not owner_alive(LockOwner(pid=_dead_pid()))
    assert not owner_alive(LockOwner(pid=me, started=str(int(started) + 1), host=host, boot=boot))
    if boot is not None:  # written before this host's last boot
        assert not owner_alive(LockOwner(pid=me, started=started, host=host, boot="x" + boot))
    # another host's process cannot be checked: its lock is never broken
    assert owner_alive(LockOwner(pid=_dead_pid(), host=host + ".elsewhere"))


def test_lock_file_records_pid_start_time_host_and_boot(tmp_path: Path) -> None:
    with folder_lock(tmp_path, "predict", ["a.png"]) as lock:
        owner = read_owner(lock.path)
        assert owner == LockOwner(
            pid=os.getpid(),
            started=process_start_time(os.getpid()),
            host=socket.gethostname(),
            boot=boot_id(),
            command="predict",
            claims=("a.png",),
        )
    assert not lock.path.exists()


def test_a_second_export_to_one_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    output = tmp_path / "model.onnx"
    with file_lock(output, "export") as lock:
        code = main(["export", "--checkpoint", str(checkpoint), "--output", str(output)])
    assert code == EXIT_BAD_INPUT
    assert lock.path == tmp_path / ".model.onnx.maskconver.lock"
    err = _refused(capsys, lock.path, "export")
    assert str(output) in err and not output.exists()


def test_evaluate_locks_its_predictions_folder(
    checkpoint: Path,
    synthetic_coco_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    save = tmp_path / "preds"
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(synthetic_coco_root)]
    argv += ["--save-predictions", str(save), "--max-images", "1", "--batch-size", "1"]
    with folder_lock(save, "evaluate") as lock:
        code = main(argv)
    assert code == EXIT_BAD_INPUT
    _refused(capsys, lock.path, "evaluate")
    assert not (save / "predictions.json").exists()


def test_data_outputs_are_locked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    argv = ["data", "synth", "--out", str(out), "--train", "1", "--val", "1", "--no-progress"]
    with file_lock(out, "data") as lock:
        code = main(argv)
    assert code == EXIT_BAD_INPUT
    _refused(capsys, lock.path, "data")
    assert not out.exists()
    assert main(argv) == 0 and not lock.path.exists()


def _predict(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> int:
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(inputs)]
    return main([*argv, "--output", str(out), "--threads", "1", *extra])


def test_a_folder_left_by_a_killed_predict_is_named_then_overwritten(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, out = write_random_images(tmp_path / "in", 2), tmp_path / "out"
    out.mkdir()
    # what a predict of im0..im2 killed after two images leaves: its PNGs, no predictions.json,
    # and its lock (a dead pid) that lists the files it was going to write
    killed = ["im0.png", "im0_overlay.jpg", "im1.png", "im2.png"]
    for name in killed:
        (out / name).write_bytes(b"partial")
    planned = [*killed, "im1_overlay.jpg", "im2_overlay.jpg", "predictions.json"]
    record = {"pid": _dead_pid(), "command": "predict", "claims": planned}
    (out / ".maskconver-predict.lock").write_text(json.dumps(record))
    assert _predict(checkpoint, inputs, out) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert "predict run that did not finish" in err and "--overwrite" in err, err
    assert len(err.splitlines()) == 1
    assert _predict(checkpoint, inputs, out, "--overwrite") == 0
    listed = {
        a["file_name"] for a in json.loads((out / "predictions.json").read_text())["annotations"]
    }
    assert listed == {"im0.png", "im1.png"}
    assert not (out / "im2.png").exists()  # the killed run's file this run does not write
    assert (out / "im0.png").read_bytes() != b"partial"
    assert {p.name for p in out.iterdir() if p.name.startswith(".")} == set()  # lock, journal


def test_a_live_predict_lock_names_its_file(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, out = write_random_images(tmp_path / "in", 1), tmp_path / "out"
    with folder_lock(out, "predict") as lock:
        assert _predict(checkpoint, inputs, out) == EXIT_BAD_INPUT
    _refused(capsys, lock.path, "predict")


def test_a_second_quickstart_into_one_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    out.mkdir()
    (out / "mine.txt").write_text("a running quickstart's files")
    with file_lock(out, "quickstart") as lock:
        assert main(["quickstart", "--output-dir", str(out), "--overwrite"]) == EXIT_BAD_INPUT
    _refused(capsys, lock.path, "quickstart")
    assert (out / "mine.txt").is_file()  # never replaced under a running one
