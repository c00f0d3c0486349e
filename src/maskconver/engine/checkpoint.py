"""Checkpoints as directories: safetensors weights + YAML config + JSON metadata + trainer state.

Layout of ``<output>/checkpoints/step_000123/``:

* ``model.safetensors``: the trained model's ``state_dict``;
* ``ema.safetensors``: the EMA model's ``state_dict`` (only when EMA is on);
* ``criterion.safetensors``: training-only parameters of the criterion (e.g. an auxiliary head),
  only when it has any; inference never reads it;
* ``config.yaml``: the resolved ``Config``;
* ``meta.json``: format version, step, meta-architecture, categories (COCO json form),
  num_classes, label_space, metrics, package version;
* ``trainer.pt``: optimizer state, RNG states, sampler position. Only tensors and Python
  primitives are stored, and it is read with ``torch.load(weights_only=True)``, so loading never
  runs pickled code.

A checkpoint is written into ``step_000123.tmp-<pid>`` and renamed into place with ``os.replace``,
so a crash never leaves a half-written ``step_*`` directory. ``checkpoints/best/`` is a real copy
of the best checkpoint by a metric (no symlinks).

Formats: 1 (maskconver 0.1.0) stored ``hard_sigmoid`` under ``postprocess``; format 2 moved it to
``model`` and added ``meta_architecture``. Older checkpoints are migrated on load
(``config.migrate_config_tree``); a checkpoint from a newer format is refused with a clear error.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import maskconver
from maskconver.config import (
    Config,
    ConfigError,
    config_from_dict,
    dump_config,
    migrate_config_tree,
    read_yaml,
)
from maskconver.data.types import CategorySet
from maskconver.engine.ema import ModelEma

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CRITERION_FILE = "criterion.safetensors"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
TRAINER_FILE = "trainer.pt"
FORMAT_VERSION = 2
_STEP_RE = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt (the message names the file)."""


@dataclass
class LoadedCheckpoint:
    """Everything read back from a checkpoint directory."""

    path: Path
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None
    criterion_state: dict[str, torch.Tensor] | None
    trainer_state: dict[str, Any] | None
    config: Config
    categories: CategorySet
    num_classes: int
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION


def step_dir_name(step: int) -> str:
    """``step_000123`` for step 123."""
    return f"step_{step:06d}"


def _tensor_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses shared storage; contiguous + cpu: its file format
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    directory: str | Path,
    *,
    model: nn.Module,
    ema: nn.Module | ModelEma | None,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    config: Config,
    categories: CategorySet,
    num_classes: int,
    metrics: dict[str, Any] | None = None,
    trainer_extra: dict[str, Any] | None = None,
    criterion: nn.Module | None = None,
) -> Path:
    """Atomically write ``<directory>/step_{step:06d}/`` and return its path.

    Args:
        directory: the ``checkpoints`` folder (created if missing).
        model: the bare (not DDP-wrapped) model.
        ema: the ``ModelEma`` (or its averaged module), or None.
        optimizer: its state goes to ``trainer.pt`` (None writes no optimizer state).
        step: optimizer steps completed.
        config: the resolved run config.
        categories: the dataset categories (their label space is stored too).
        num_classes: model class channels.
        metrics: latest evaluation metrics (JSON-serialisable), if any.
        trainer_extra: more ``trainer.pt`` entries (RNG states, sampler position); tensors and
            Python primitives only.
        criterion: the training criterion; its state (if it has any) goes to
            ``criterion.safetensors``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / step_dir_name(step)
    tmp = directory / f"{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_tensor_state(model.state_dict()), str(tmp / MODEL_FILE))
    if ema is not None:
        save_file(_tensor_state(ema.state_dict()), str(tmp / EMA_FILE))
    criterion_state = criterion.state_dict() if criterion is not None else {}
    if criterion_state:
        save_file(_tensor_state(criterion_state), str(tmp / CRITERION_FILE))
    (tmp / CONFIG_FILE).write_text(dump_config(config))
    meta = {
        "format": FORMAT_VERSION,
        "step": step,
        "meta_architecture": config.model.meta_architecture,
        "num_classes": num_classes,
        "label_space": categories.label_space,
        "categories": categories.to_json(),
        "metrics": metrics or {},
        "maskconver_version": maskconver.__version__,
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    trainer: dict[str, Any] = {"step": step}
    if optimizer is not None:
        trainer["optimizer"] = optimizer.state_dict()
    trainer.update(trainer_extra or {})
    torch.save(trainer, tmp / TRAINER_FILE)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors / Python primitives (``torch.load(weights_only=True)``-safe)."""
    kind, keys, pos, has_gauss, cached = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True)
    )
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory of ``path`` (the directory itself or any file inside it)."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not (p / META_FILE).is_file():
        latest = latest_checkpoint(p)
        if latest is not None:  # a run directory or its checkpoints folder: take the latest
            return latest
        raise CheckpointError(f"{p} is not a checkpoint directory (missing {META_FILE})")
    return p


def _read_safetensors(path: Path, map_location: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        return load_file(str(path), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt weights file {path}: {e}") from e


def load_checkpoint(path: str | Path, *, map_location: str = "cpu") -> LoadedCheckpoint:
    """Read a checkpoint directory (or a file inside it, or a run dir: its latest checkpoint)."""
    ckpt = resolve_checkpoint_dir(path)
    meta_path = ckpt / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        step = int(meta["step"])
        num_classes = int(meta["num_classes"])
        categories = CategorySet.from_json(
            meta["categories"], meta.get("label_space", "contiguous")
        )
        version = int(meta.get("format", 1))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"corrupt metadata file {meta_path}: {e!r}") from e
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{ckpt} has checkpoint format {version}, newer than this maskconver "
            f"({maskconver.__version__}, format {FORMAT_VERSION}): upgrade maskconver to read it"
        )
    config_path = ckpt / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint file missing: {config_path}")
    try:
        config = config_from_dict(migrate_config_tree(read_yaml(config_path), version))
    except ConfigError as e:
        raise CheckpointError(f"bad config file {config_path}: {e}") from e
    model_state = _read_safetensors(ckpt / MODEL_FILE, map_location)
    ema_path = ckpt / EMA_FILE
    ema_state = _read_safetensors(ema_path, map_location) if ema_path.exists() else None
    criterion_path = ckpt / CRITERION_FILE
    criterion_state = (
        _read_safetensors(criterion_path, map_location) if criterion_path.exists() else None
    )
    trainer_path = ckpt / TRAINER_FILE
    trainer_state = None
    if trainer_path.exists():
        try:
            trainer_state = torch.load(trainer_path, map_location=map_location, weights_only=True)
        except Exception as e:  # unpickling error, truncated zip, ...
            raise CheckpointError(f"corrupt trainer state {trainer_path}: {e}") from e
    return LoadedCheckpoint(
        path=ckpt,
        model_state=model_state,
        ema_state=ema_state,
        criterion_state=criterion_state,
        trainer_state=trainer_state,
        config=config,
        categories=categories,
        num_classes=num_classes,
        step=step,
        metrics=dict(meta.get("metrics") or {}),
        format=version,
    )


def load_model(
    path: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Config, CategorySet, int]:
    """Build the model of a checkpoint and load its (EMA, when present) weights, in eval mode.

    The model is built through the meta-architecture table from the stored (migrated) config.

    Returns:
        ``(model, config, categories, num_classes)``.
    """
    from maskconver.build import build_model

    loaded = load_checkpoint(path)
    model = build_model(loaded.config.model, loaded.num_classes)
    state = loaded.ema_state if use_ema and loaded.ema_state is not None else loaded.model_state
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {loaded.path} do not fit the model: {e}") from e
    model.to(device).eval()
    return model, loaded.config, loaded.categories, loaded.num_classes


def _checkpoint_root(output_dir: Path) -> Path:
    return output_dir if output_dir.name == CHECKPOINT_DIR else output_dir / CHECKPOINT_DIR


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete ``step_*`` checkpoints of a run, oldest first (``.tmp-*`` leftovers ignored)."""
    root = _checkpoint_root(Path(output_dir))
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / META_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def metric_value(metrics: dict[str, Any], key: str) -> float | None:
    """``metrics[key]``, else ``metrics["all"][key]`` or ``metrics["all/" + key]``, else None."""
    candidates: list[Any] = [metrics.get(key), metrics.get(f"all/{key}")]
    if isinstance(metrics.get("all"), dict):
        candidates.append(metrics["all"].get(key))
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _read_metric(ckpt: Path, key: str) -> float | None:
    try:
        meta = json.loads((ckpt / META_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metric_value(meta.get("metrics") or {}, key)


def _replace_dir(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` so ``dst`` is always either the old or the new complete copy."""
    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")
    old = dst.with_name(f"{dst.name}.old-{os.getpid()}")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    shutil.copytree(src, tmp)
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    if old.exists():
        shutil.rmtree(old)


def prune_checkpoints(
    output_dir: str | Path, keep_last: int, keep_best_by: str = "pq"
) -> Path | None:
    """Keep the ``keep_last`` newest checkpoints and a copy of the best one in ``best/``.

    The best checkpoint is the one with the highest ``keep_best_by`` metric among the existing
    ``best/`` and every current checkpoint; checkpoints without that metric never become best.

    Args:
        output_dir: run directory (or its ``checkpoints`` folder).
        keep_last: how many newest ``step_*`` directories to keep; ``<= 0`` keeps all.
        keep_best_by: metric name (looked up as ``key``, ``all/key`` or ``all[key]``).

    Returns:
        the ``best/`` directory, or None when no checkpoint has the metric.
    """
    root = _checkpoint_root(Path(output_dir))
    checkpoints = list_checkpoints(root)
    best_dir = root / BEST_DIR
    best_value = _read_metric(best_dir, keep_best_by) if best_dir.is_dir() else None
    best_src = None
    for ckpt in checkpoints:
        value = _read_metric(ckpt, keep_best_by)
        if value is not None and (best_value is None or value > best_value):
            best_value, best_src = value, ckpt
    if best_src is not None:
        _replace_dir(best_src, best_dir)
    if keep_last > 0:
        for ckpt in checkpoints[:-keep_last]:
            shutil.rmtree(ckpt)
    return best_dir if best_dir.is_dir() else None
