"""Which checkpoints a run keeps: the newest ``keep_last`` and a copy of the best by a metric.

``checkpoints/best/`` is a real copy (no symlink) replaced with one atomic exchange
(``renameat2(RENAME_EXCHANGE)`` on Linux), so a reader always finds a complete ``best``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
META_FILE = "meta.json"
_STEP_RE = re.compile(r"^step_(\d+)$")


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


RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two paths atomically (Linux >= 3.15)
AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths with ``renameat2(RENAME_EXCHANGE)``.

    Returns False when the system cannot (another OS, an old kernel or file system).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    return bool(result == 0)


def _replace_dir(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` always exists as the old or the new full copy.

    The copy is made beside ``dst`` and swapped in with one atomic exchange, so a reader (or a
    crash) never finds ``dst`` missing; where the exchange is unavailable, two renames follow
    each other (and ``restore_best`` repairs a crash between them).
    """
    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")
    old = dst.with_name(f"{dst.name}.old-{os.getpid()}")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    shutil.copytree(src, tmp)
    if dst.exists() and exchange(tmp, dst):
        shutil.rmtree(tmp)  # it now holds the previous copy
        return
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    if old.exists():
        shutil.rmtree(old)


def restore_best(root: Path) -> None:
    """After a crash between the two renames of ``_replace_dir``: put a copy back in place."""
    best = root / BEST_DIR
    if best.exists():
        return
    for candidate in sorted(root.glob(f"{BEST_DIR}.*-*")):
        if (candidate / META_FILE).is_file():
            os.replace(candidate, best)
            return


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
    restore_best(root)
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
