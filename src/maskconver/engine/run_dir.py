"""The run directory before step 1: checks that must pass before anything is written.

``prepare_run`` refuses a fresh start over existing checkpoints, checks that a resumed run
still describes the same model, that the checkpoint's ``config.yaml`` still describes its weights
and that the run's ``config.yaml`` was not hand-edited to another model (all before
``config.yaml`` is touched, so a refused ``--resume`` changes nothing), removes the half-written
checkpoint folders of dead processes, truncates ``metrics.jsonl`` to the resumed step (no
duplicate steps after a crash) and writes the resolved config atomically. The model keys a
resumed run may change are ``integrity.NOT_THE_NETWORK`` and ``model.backbone.weights``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from safetensors import SafetensorError

from maskconver.config import (
    Config,
    ConfigError,
    config_from_dict,
    dump_config,
    migrate_config_tree,
    read_yaml,
)
from maskconver.engine.checkpoint import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EMA_FILE,
    META_FILE,
    MODEL_FILE,
    CheckpointError,
    check_network_config,
    latest_checkpoint,
    list_checkpoints,
)
from maskconver.engine.integrity import network_config, weights_metadata
from maskconver.engine.logging import METRICS_FILE
from maskconver.errors import one_line
from maskconver.files import process_alive, write_text_atomic

_LEFTOVER = re.compile(r"\.(tmp|old)-(\d+)$")
RUN_CONFIG_FILE = "config.yaml"


def _network_changes(old: Config, new: Config) -> list[str]:
    """``key: old -> new`` for each network-config key that differs (``integrity``).

    Keys a resumed run may change (targets, losses, merges, the backbone weight file, the
    sub-block of the meta-architecture not in use) are not compared.
    """
    before, after = network_config(old.model), network_config(new.model)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed]


def _shown(changes: list[str]) -> str:
    more = f" (+{len(changes) - 5} more)" if len(changes) > 5 else ""
    return ", ".join(changes[:5]) + more


def check_resumable(checkpoint: Path, cfg: Config) -> tuple[Config, int]:
    """``CheckpointError`` when ``cfg`` describes another model than the checkpoint's.

    The checkpoint's ``config.yaml`` must also still describe its weights (their fingerprint).

    Returns:
        The checkpoint's (migrated) config and its checkpoint format.
    """
    try:
        version = int(json.loads((checkpoint / META_FILE).read_text()).get("format", 1))
        saved = config_from_dict(migrate_config_tree(read_yaml(checkpoint / CONFIG_FILE), version))
        for name in (MODEL_FILE, EMA_FILE):
            if (checkpoint / name).is_file():
                metadata = weights_metadata(checkpoint / name)
                check_network_config(checkpoint / name, metadata, saved, version)
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise CheckpointError(f"cannot resume from {checkpoint}: {e}") from e
    changed = _network_changes(saved, cfg)
    if changed:
        raise CheckpointError(
            f"cannot resume from {checkpoint}: the model config changed ({_shown(changed)}); "
            "nothing was written. Resume with the run's own config.yaml or choose another "
            "--output-dir"
        )
    return saved, version


def check_run_config(output_dir: Path, checkpoint: Path, saved: Config, version: int) -> None:
    """``CheckpointError`` when the run's ``config.yaml`` was hand-edited to another model.

    A resume rewrites ``<output_dir>/config.yaml`` with the config it runs on; an edit of a key
    that describes the network (not one a resumed run may change) is refused instead of being
    silently overwritten.

    Args:
        output_dir: the run directory.
        checkpoint: the checkpoint the run resumes from.
        saved: the (migrated) config of the checkpoint the run resumes from.
        version: that checkpoint's format (the run's ``config.yaml`` was written with it).
    """
    path = output_dir / RUN_CONFIG_FILE
    if not path.is_file():
        return
    try:
        tree = read_yaml(path)
        try:  # today's layout (a resume by this version that stopped before a checkpoint) ...
            written = config_from_dict(tree)
        except ConfigError:  # ... or the layout of the checkpoint's format
            written = config_from_dict(migrate_config_tree(tree, version))
    except (OSError, ValueError) as e:  # ConfigError is a ValueError
        raise CheckpointError(f"cannot resume: {path} cannot be read: {one_line(e)}") from e
    changed = _network_changes(saved, written)
    if changed:
        raise CheckpointError(
            f"cannot resume: {path} was edited since {checkpoint.name} was written and "
            f"now describes another model ({_shown(changed)}); nothing was written. Undo the "
            "edit (model changes need a new --output-dir)"
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
        CheckpointError: the checkpoint to resume describes another model, its config.yaml no
            longer describes its weights, or the run's config.yaml was edited to another model
            (nothing written).
    """
    if list_checkpoints(output_dir) and not resume:
        raise FileExistsError(
            f"{output_dir / CHECKPOINT_DIR} already holds checkpoints: pass --resume to "
            "continue that run or choose another --output-dir"
        )
    checkpoint = latest_checkpoint(output_dir) if resume else None
    if checkpoint is not None:
        saved, version = check_resumable(checkpoint, cfg)
        check_run_config(output_dir, checkpoint, saved, version)
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(output_dir)
        if checkpoint is not None:
            step = int(json.loads((checkpoint / META_FILE).read_text())["step"])
            truncate_metrics(output_dir, step)
        elif (output_dir / METRICS_FILE).exists():  # a fresh run starts a fresh log
            truncate_metrics(output_dir, 0)
        write_text_atomic(output_dir / RUN_CONFIG_FILE, dump_config(cfg))
    return checkpoint
