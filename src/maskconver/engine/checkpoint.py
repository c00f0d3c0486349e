"""Checkpoints as directories: safetensors weights + YAML config + JSON metadata + trainer state.

Layout of ``<output>/checkpoints/step_000123/``:

* ``model.safetensors``: the trained model's ``state_dict``; its safetensors metadata holds the
  fingerprint of the network config (below);
* ``ema.safetensors``: the EMA model's ``state_dict`` (only when EMA is on), with the same
  fingerprint;
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
of the best checkpoint by a metric (no symlinks). A checkpoint whose weights hold NaN or inf is
never written (``CheckpointError``; training raises ``NonFiniteWeightsError`` first).

Loading refuses (``CheckpointError``, one line naming the checkpoint) weights files with a NaN or
inf (naming the first such tensor), and a ``config.yaml`` that no longer describes the weights.
The network config fingerprinted at save time is the ``model`` section minus what does not
change what the weights compute: ``model.maskconver.targets`` / ``loss`` / ``merge``,
``model.dr1mask.merge`` (mode, box crop, thresholds), ``model.backbone.weights`` (the keys a
resumed run may change) and the unselected meta-architecture's sub-block. ``num_classes``,
``num_proposals``, BN settings and every backbone / decoder / head / sub-block field are in it.
It is stored as the sha256 of its canonical JSON plus that JSON (``engine/integrity.py``), so
the error names the differing keys; weights files without it (formats 1 and 2) load unchecked,
their config migrated.

Formats: 1 (maskconver 0.1.0) stored ``hard_sigmoid`` under ``postprocess``; format 2 moved it to
``model`` and added ``meta_architecture``; format 3 gave each meta-architecture its own config
sub-block: MaskConver's model fields, ``targets``, ``loss`` and merge settings under
``model.maskconver``, DR1Mask's merge settings under ``model.dr1mask.merge``, the merge thresholds
of ``postprocess`` in the merge of the checkpoint's meta-architecture. Older checkpoints are
migrated on load (``config.migrate_config_tree``, the moves in ``config/migrate.py``); a
checkpoint from a newer format is refused with a clear error.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
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
from maskconver.engine.integrity import (
    check_finite_file,
    fingerprint_metadata,
    fingerprint_mismatch,
)
from maskconver.engine.retention import (
    BEST_DIR,
    CHECKPOINT_DIR,
    META_FILE,
    exchange,
    latest_checkpoint,
    list_checkpoints,
    metric_value,
    prune_checkpoints,
)
from maskconver.errors import MaskconverError

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CRITERION_FILE = "criterion.safetensors"
CONFIG_FILE = "config.yaml"
TRAINER_FILE = "trainer.pt"
FORMAT_VERSION = 3


class CheckpointError(MaskconverError, RuntimeError):
    """A checkpoint is missing, incomplete or corrupt (the message names the file)."""


class NonFiniteCheckpointError(CheckpointError):
    """``save_checkpoint`` was handed weights holding NaN or inf (the message names the tensor)."""


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
    try:
        _write_files(
            tmp,
            model=model,
            ema=ema,
            optimizer=optimizer,
            step=step,
            config=config,
            categories=categories,
            num_classes=num_classes,
            metrics=metrics,
            trainer_extra=trainer_extra,
            criterion=criterion,
        )
    except NonFiniteCheckpointError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise NonFiniteCheckpointError(f"cannot write checkpoint {final}: {e}") from e
    except (OSError, RuntimeError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed write leaves nothing behind
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC or "pos" in str(e)
        hint = " (the disk looks full)" if full else ""
        raise CheckpointError(f"cannot write checkpoint {final}{hint}: {e}") from e
    if final.exists() and exchange(tmp, final):  # re-saving a step: swap, never missing
        shutil.rmtree(tmp)
        return final
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _write_files(
    tmp: Path,
    *,
    model: nn.Module,
    ema: nn.Module | ModelEma | None,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    config: Config,
    categories: CategorySet,
    num_classes: int,
    metrics: dict[str, Any] | None,
    trainer_extra: dict[str, Any] | None,
    criterion: nn.Module | None,
) -> None:
    """Every file of a checkpoint, into the (new) folder ``tmp``."""
    tmp.mkdir()
    weights = {MODEL_FILE: _tensor_state(model.state_dict())}
    if ema is not None:
        weights[EMA_FILE] = _tensor_state(ema.state_dict())
    criterion_state = criterion.state_dict() if criterion is not None else {}
    if criterion_state:
        weights[CRITERION_FILE] = _tensor_state(criterion_state)
    for name, state in weights.items():  # a checkpoint with NaN/inf weights is never written
        reason = check_finite_file(Path(name), state)
        if reason is not None:
            raise NonFiniteCheckpointError(f"refusing to write step {step}: {reason}")
    fingerprint = fingerprint_metadata(config.model)
    for name, state in weights.items():
        save_file(state, str(tmp / name), metadata=fingerprint if name != CRITERION_FILE else None)
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


def update_metrics(checkpoint: str | Path, metrics: dict[str, Any]) -> None:
    """Store evaluation metrics in a checkpoint's ``meta.json`` (rewritten atomically)."""
    from maskconver.files import write_text_atomic

    path = Path(checkpoint) / META_FILE
    meta = json.loads(path.read_text())
    meta["metrics"] = metrics
    write_text_atomic(path, json.dumps(meta, indent=2))


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


def _read_safetensors(
    path: Path, map_location: str
) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """The tensors and the metadata of a weights file; refuses NaN / inf weights."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        with safe_open(str(path), framework="pt", device=map_location) as f:
            metadata = f.metadata()
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt weights file {path}: {e}") from e
    reason = check_finite_file(path, state)
    if reason is not None:
        raise CheckpointError(f"cannot load checkpoint {path.parent}: {reason}")
    return state, metadata


def check_network_config(
    path: Path, metadata: dict[str, str] | None, config: Config, version: int
) -> None:
    """``CheckpointError`` when the weights file ``path`` was trained on another network config.

    Args:
        path: a weights file of a checkpoint (named in the error).
        metadata: its safetensors metadata (None or without a fingerprint: nothing to check).
        config: the checkpoint's (migrated) ``config.yaml``.
        version: the checkpoint's format.
    """
    diffs = fingerprint_mismatch(metadata, config.model, version=version)
    if diffs:
        raise CheckpointError(
            f"cannot load checkpoint {path.parent}: {path.parent / CONFIG_FILE} does not describe "
            f"the network in {path.name} ({'; '.join(diffs)}); was config.yaml edited? Restore "
            "its values"
        )


def load_checkpoint(path: str | Path, *, map_location: str = "cpu") -> LoadedCheckpoint:
    """Read a checkpoint directory (or a file inside it, or a run dir: its latest checkpoint)."""
    ckpt = resolve_checkpoint_dir(path)
    meta_path = ckpt / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        step = int(meta["step"])
        num_classes = int(meta["num_classes"])
        if not isinstance(meta["categories"], list) or not all(
            isinstance(c, dict) for c in meta["categories"]
        ):
            raise ValueError(
                "'categories' must be a list of {id, name, ...} objects, got "
                f"{meta['categories']!r:.80}"
            )
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
    recorded = meta.get("meta_architecture")
    if recorded is not None and recorded != config.model.meta_architecture:
        raise CheckpointError(
            f"{meta_path} records meta-architecture {recorded!r} but {config_path} builds "
            f"{config.model.meta_architecture!r}: the checkpoint was edited or mixed up"
        )
    model_state, model_meta = _read_safetensors(ckpt / MODEL_FILE, map_location)
    check_network_config(ckpt / MODEL_FILE, model_meta, config, version)
    ema_path = ckpt / EMA_FILE
    ema_state = None
    if ema_path.exists():
        ema_state, ema_meta = _read_safetensors(ema_path, map_location)
        check_network_config(ema_path, ema_meta, config, version)
    criterion_path = ckpt / CRITERION_FILE
    criterion_state = (
        _read_safetensors(criterion_path, map_location)[0] if criterion_path.exists() else None
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
    # self-contained: the checkpoint holds every weight, so a backbone weight file the run
    # started from is never read again (it may be gone or elsewhere)
    model_cfg = loaded.config.model
    model_cfg = dataclasses.replace(
        model_cfg, backbone=dataclasses.replace(model_cfg.backbone, weights=None)
    )
    model = build_model(model_cfg, loaded.num_classes)
    state = loaded.ema_state if use_ema and loaded.ema_state is not None else loaded.model_state
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {loaded.path} do not fit the model: {e}") from e
    model.to(device).eval()
    return model, loaded.config, loaded.categories, loaded.num_classes


__all__ = [
    "BEST_DIR",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "CheckpointError",
    "LoadedCheckpoint",
    "META_FILE",
    "NonFiniteCheckpointError",
    "check_network_config",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model",
    "metric_value",
    "prune_checkpoints",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "update_metrics",
]
