"""The run directory before step 1: checks that must pass before anything is written.

``prepare_run`` refuses a fresh start over existing checkpoints, checks that a resumed run
still describes the same model (before ``config.yaml`` is touched, so a refused ``--resume``
changes nothing), removes the half-written checkpoint folders of dead processes, truncates
``metrics.jsonl`` to the resumed step (no duplicate steps after a crash) and writes the resolved
config atomically.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from maskconver.config import (
    MERGE_THRESHOLDS,
    Config,
    config_from_dict,
    dump_config,
    migrate_config_tree,
    read_yaml,
    to_dict,
)
from maskconver.engine.checkpoint import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    META_FILE,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
)
from maskconver.engine.logging import METRICS_FILE
from maskconver.files import process_alive, write_text_atomic

_LEFTOVER = re.compile(r"\.(tmp|old)-(\d+)$")
# model-section settings that do not describe the network (training targets, losses, merges:
# outside ``model`` before checkpoint format 3); a resumed run may change them
_NOT_THE_NETWORK = (
    "model.maskconver.targets.",
    "model.maskconver.loss.",
    "model.maskconver.merge.",
    *(f"model.dr1mask.merge.{name}" for name in MERGE_THRESHOLDS),
)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def check_resumable(checkpoint: Path, cfg: Config) -> None:
    """``CheckpointError`` when ``cfg`` describes another model than the checkpoint's."""
    try:
        meta = json.loads((checkpoint / META_FILE).read_text())
        saved = config_from_dict(
            migrate_config_tree(read_yaml(checkpoint / CONFIG_FILE), int(meta.get("format", 1)))
        )
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot resume from {checkpoint}: {e}") from e
    old = _flatten(to_dict(saved.model), "model.")
    new = _flatten(to_dict(cfg.model), "model.")
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    # a weight file is read only at the start of a run; changing it does not change the model
    changed = [
        k for k in changed if k != "model.backbone.weights" and not k.startswith(_NOT_THE_NETWORK)
    ]
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        more = f" (+{len(changed) - 5} more)" if len(changed) > 5 else ""
        raise CheckpointError(
            f"cannot resume from {checkpoint}: the model config changed ({shown}{more}); "
            "nothing was written. Resume with the run's own config.yaml or choose another "
            "--output-dir"
        )


def remove_leftovers(output_dir: Path) -> list[Path]:
    """Remove ``*.tmp-<pid>`` / ``*.old-<pid>`` checkpoint folders of dead processes."""
    root = output_dir / CHECKPOINT_DIR
    removed = []
    if root.is_dir():
        for path in root.iterdir():
            match = _LEFTOVER.search(path.name)
            if match and not process_alive(int(match.group(2))):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def truncate_metrics(output_dir: Path, step: int) -> int:
    """Drop ``metrics.jsonl`` records after ``step`` (a resumed run logs them again).

    Returns:
        The number of records dropped. Lines that are not JSON objects are dropped too (a
        crash can cut the last line).
    """
    path = output_dir / METRICS_FILE
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_text_atomic(path, "".join(f"{line}\n" for line in kept))
    return dropped


def prepare_run(output_dir: Path, cfg: Config, *, resume: bool, is_main: bool) -> Path | None:
    """Checks and clean-up before training; returns the checkpoint to resume from, if any.

    Raises:
        FileExistsError: checkpoints exist and ``resume`` is False.
        CheckpointError: the checkpoint to resume describes another model (nothing written).
    """
    if list_checkpoints(output_dir) and not resume:
        raise FileExistsError(
            f"{output_dir / CHECKPOINT_DIR} already holds checkpoints: pass --resume to "
            "continue that run or choose another --output-dir"
        )
    checkpoint = latest_checkpoint(output_dir) if resume else None
    if checkpoint is not None:
        check_resumable(checkpoint, cfg)
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(output_dir)
        if checkpoint is not None:
            step = int(json.loads((checkpoint / META_FILE).read_text())["step"])
            truncate_metrics(output_dir, step)
        elif (output_dir / METRICS_FILE).exists():  # a fresh run starts a fresh log
            truncate_metrics(output_dir, 0)
        write_text_atomic(output_dir / "config.yaml", dump_config(cfg))
    return checkpoint
