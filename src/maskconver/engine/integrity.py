"""Checks that a checkpoint's weights are what its ``config.yaml`` says, and that they are finite.

The *network config* (``network_config``; the set is documented in ``engine/checkpoint.py``) is
the ``model`` section without ``NOT_THE_NETWORK`` (the keys a resumed run may change:
MaskConver's targets, loss and merge, DR1Mask's and kMaX's merges, ``model.backbone.weights``)
and without the unselected meta-architecture's sub-block. The weights files record it in their
safetensors metadata: ``FINGERPRINT_KEY`` holds the sha256 of its canonical JSON (sorted keys, no
spaces), ``NETWORK_CONFIG_KEY`` that JSON, so a mismatch can name the differing keys. Only keys
on both sides are compared (a field added in a later version takes its default, which keeps the
old behaviour); files without the metadata are not checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from maskconver.config import ModelConfig, migrate_config_tree, to_dict
from maskconver.config.migrate import flatten, set_path

FINGERPRINT_KEY = "maskconver.network_config_sha256"
NETWORK_CONFIG_KEY = "maskconver.network_config"
# model-section settings that do not describe the network (training targets, losses, merges:
# outside ``model`` before checkpoint format 3); a resumed run may change them
NOT_THE_NETWORK = (
    "model.maskconver.targets.",
    "model.maskconver.loss.",
    "model.maskconver.merge.",
    "model.dr1mask.merge.",  # mode, box crop and thresholds: post-processing, not weights
    "model.kmax.merge.",
)
BACKBONE_WEIGHTS_KEY = "model.backbone.weights"


def is_network_key(key: str) -> bool:
    """False for a dotted ``model.`` key outside the network config (``NOT_THE_NETWORK``)."""
    return key != BACKBONE_WEIGHTS_KEY and not key.startswith(NOT_THE_NETWORK)


def network_config(model: ModelConfig) -> dict[str, Any]:
    """The network config (module docstring) as dotted keys -> JSON values."""
    unused = tuple(f"{block}." for block in model.unused_blocks())
    flat = flatten(to_dict(model), "model.")
    subset = {k: v for k, v in flat.items() if is_network_key(k) and not k.startswith(unused)}
    return dict(json.loads(json.dumps(subset)))  # tuples -> lists, as read back


def _canonical(subset: Mapping[str, Any]) -> str:
    return json.dumps(subset, sort_keys=True, separators=(",", ":"))


def fingerprint_metadata(model: ModelConfig) -> dict[str, str]:
    """The safetensors metadata a weights file of a network built from ``model`` stores."""
    text = _canonical(network_config(model))
    return {
        FINGERPRINT_KEY: hashlib.sha256(text.encode()).hexdigest(),
        NETWORK_CONFIG_KEY: text,
    }


def fingerprint_mismatch(
    metadata: Mapping[str, str] | None, model: ModelConfig, *, version: int
) -> list[str]:
    """Why a weights file's fingerprint does not fit ``model`` (empty: it fits or has none).

    Args:
        metadata: the file's safetensors metadata (None or without ``FINGERPRINT_KEY``: no
            fingerprint, nothing to check).
        model: the model section of the checkpoint's (migrated) ``config.yaml``.
        version: the checkpoint format (the stored keys are migrated from it).

    Returns:
        One ``"<key>: <stored> in the weights, <current> in config.yaml"`` per differing key, or a
        single line saying the fingerprint itself is corrupt.
    """
    if not metadata or FINGERPRINT_KEY not in metadata:
        return []
    text = metadata.get(NETWORK_CONFIG_KEY, "")
    if hashlib.sha256(text.encode()).hexdigest() != metadata[FINGERPRINT_KEY]:
        return [f"its {FINGERPRINT_KEY} does not match its {NETWORK_CONFIG_KEY} (corrupt metadata)"]
    current = network_config(model)
    if _canonical(current) == text:
        return []
    try:
        stored = json.loads(text)
    except json.JSONDecodeError as e:  # pragma: no cover - the hash matched: we wrote it
        return [f"its {NETWORK_CONFIG_KEY} is not JSON ({e})"]
    tree: dict[str, Any] = {}
    for key, value in stored.items():
        set_path(tree, key, value)
    stored = flatten(migrate_config_tree(tree, version))
    return [
        f"{key}: {stored[key]!r} in the weights, {current[key]!r} in config.yaml"
        for key in sorted(stored.keys() & current.keys())
        if stored[key] != current[key]
    ]


def weights_metadata(path: Path) -> dict[str, str] | None:
    """The safetensors metadata of a weights file, without reading its tensors.

    Raises:
        SafetensorError, OSError: the file cannot be read.
    """
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return f.metadata()


def first_non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor of ``state`` holding NaN or inf, or None."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def check_finite_file(path: Path, state: Mapping[str, torch.Tensor]) -> str | None:
    """A one-line reason when the weights ``state`` read from ``path`` are not finite."""
    name = first_non_finite(state)
    if name is None:
        return None
    return f"{path} holds non-finite weights (NaN or inf), first in tensor {name!r}"


__all__ = [
    "FINGERPRINT_KEY",
    "NETWORK_CONFIG_KEY",
    "NOT_THE_NETWORK",
    "check_finite_file",
    "fingerprint_metadata",
    "fingerprint_mismatch",
    "first_non_finite",
    "flatten",
    "is_network_key",
    "network_config",
    "weights_metadata",
]
