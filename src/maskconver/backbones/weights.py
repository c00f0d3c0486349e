r"""Load torchvision-named (ImageNet) weights into a backbone, reporting what matched.

Usage from the CLI (torchvision's ImageNet file, downloaded by hand; it also fits the ResNet
inside ``resnet50_unet``)::

    maskconver train --config resnet50_unet --data-root <coco> --output-dir runs/r50u \
        --set model.backbone.weights=resnet50-0676ba61.pth

Accepted files: ``.safetensors`` and ``.pth``/``.pt`` (read with ``torch.load(weights_only=True)``;
a checkpoint dict holding a ``state_dict``/``model`` entry is unwrapped). Key handling:

* leading ``module.`` / ``backbone.`` prefixes are stripped;
* torchvision classifier keys (``fc.*``, ``classifier.*``) are skipped silently;
* ``num_batches_tracked`` entries are never reported (``FrozenBatchNorm2d`` has none);
* a key absent from the backbone but present as ``resnet.<key>`` is mapped there, so a plain
  torchvision ResNet-50 file loads into ``ResNetUNet``;
* tensors whose shape differs from the backbone's are reported as mismatched and not loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from maskconver.errors import MaskconverError

STRIPPED_PREFIXES = ("module.", "backbone.")
SKIPPED_PREFIXES = ("fc.", "classifier.")
NESTED_PREFIXES = ("resnet.",)  # where a wrapped trunk lives inside a composite backbone
CHECKPOINT_KEYS = ("state_dict", "model")
IGNORED_SUFFIX = "num_batches_tracked"
SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
MAX_LISTED = 10  # names shown per category in ``summary()``
# a file must fill at least this share of the backbone's tensors (else it is refused)
MIN_LOADED_FRACTION = 0.5


@dataclass
class LoadReport:
    """What ``load_backbone_weights`` did.

    Attributes:
        loaded: backbone parameter/buffer names that received a tensor.
        missing: backbone names the file did not provide (still at their initial values).
        unexpected: file keys with no counterpart in the backbone (after prefix handling).
        mismatched: ``"name: file [shape] vs model [shape]"`` for shape conflicts (not loaded).
        skipped: classifier keys dropped on purpose.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line of counts plus the first few names of every non-empty problem list."""
        lines = [
            f"loaded {len(self.loaded)} tensors, missing {len(self.missing)}, "
            f"unexpected {len(self.unexpected)}, mismatched {len(self.mismatched)}, "
            f"skipped {len(self.skipped)} classifier keys"
        ]
        for title, names in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("mismatched", self.mismatched),
        ):
            if names:
                more = f" ... (+{len(names) - MAX_LISTED})" if len(names) > MAX_LISTED else ""
                lines.append(f"  {title}: {', '.join(names[:MAX_LISTED])}{more}")
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a tensor dict from ``.safetensors`` or ``.pth``/``.pt``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an unknown suffix or a file that holds no tensor dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    if path.suffix not in TORCH_SUFFIXES:
        raise ValueError(
            f"backbone weights {path}: unknown suffix {path.suffix!r}; "
            f"use {SAFETENSORS_SUFFIX} or one of {TORCH_SUFFIXES}"
        )
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"backbone weights {path}: expected a dict of tensors (a state_dict)")
    return dict(obj)


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key


def load_backbone_weights(
    backbone: nn.Module, path: str | Path, *, min_fraction: float = MIN_LOADED_FRACTION
) -> LoadReport:
    """Copy matching tensors from ``path`` into ``backbone`` in place.

    Args:
        backbone: any backbone module (names as documented in the module docstring).
        path: ``.safetensors`` / ``.pth`` / ``.pt`` file.
        min_fraction: refuse the file (``WeightsError``) when fewer than this share of the
            backbone's tensors found a match: a file for another architecture, or keys this
            loader cannot map, must not start a run from random weights unnoticed.

    Returns:
        A ``LoadReport``; call ``summary()`` for a log line.
    """
    source = read_state_dict(path)
    target = backbone.state_dict()
    report = LoadReport()
    to_load: dict[str, Tensor] = {}
    for raw_key, tensor in source.items():
        key = _strip_prefixes(raw_key)
        if key.startswith(SKIPPED_PREFIXES):
            report.skipped.append(raw_key)
            continue
        candidates = [key] + [prefix + key for prefix in NESTED_PREFIXES]
        name = next((c for c in candidates if c in target), None)
        if name is None:
            if not key.endswith(IGNORED_SUFFIX):
                report.unexpected.append(raw_key)
            continue
        if tuple(tensor.shape) != tuple(target[name].shape):
            report.mismatched.append(
                f"{name}: file {list(tensor.shape)} vs model {list(target[name].shape)}"
            )
            continue
        to_load[name] = tensor
    backbone.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.missing = [
        name for name in target if name not in to_load and not name.endswith(IGNORED_SUFFIX)
    ]
    wanted = len(report.loaded) + len(report.missing)
    if wanted and len(report.loaded) < min_fraction * wanted:
        raise WeightsError(
            f"backbone weights {path} fit only {len(report.loaded)} of the backbone's {wanted} "
            f"tensors ({type(backbone).__name__}); is it a file for another architecture? "
            + report.summary()
        )
    return report


class WeightsError(MaskconverError, ValueError):
    """A weight file does not fit the backbone (the message says how much matched)."""
