"""Optimizer, weight-decay parameter groups and the learning-rate schedule.

Weight-decay coverage follows the reference (section 1.9): decay on conv/linear kernels and on
the class-embedding table; never on norm parameters, biases, layer-scale gammas or (by default)
depthwise kernels. SGD applies it as an L2 gradient term ``wd * w`` on that group only, which is
exactly ``torch.optim.SGD(weight_decay=wd)``; AdamW applies decoupled decay
``w -= lr * wd * w``, which is Model Garden's ``AdamWeightDecay``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from maskconver.config import TrainConfig

# Model Garden AdamW epsilon (the reference ResNet-UNet recipe: beta1 .9, beta2 .999, eps 1e-7).
ADAMW_EPS = 1e-7

_KERNEL_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)


def _is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d))
        and module.groups > 1
        and module.groups == module.in_channels
    )


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    decay_depthwise: bool = False,
    lr_scales: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Split trainable parameters into decayed / non-decayed groups, per LR scale.

    Args:
        model: the (bare) model, or a module holding the model and training-only parts.
        weight_decay: decay strength for the decayed group.
        decay_depthwise: also decay depthwise conv kernels (``regularize_depthwise``; off in the
            reference).
        lr_scales: parameter-name prefix -> learning-rate scale (e.g. ``{"backbone.": 0.1}``);
            the longest matching prefix wins, unmatched parameters get 1.

    Returns:
        Groups ``{"params", "weight_decay", "lr_scale", "names"}``: for every LR scale present,
        a decayed group then a non-decayed one (empty groups are left out, except that scale 1
        always has both, so the default layout is ``[decayed, non-decayed]``). Every trainable
        parameter appears exactly once (shared parameters at their first occurrence).
        ``set_lr`` sets each group's ``lr`` to the scheduled value times its ``lr_scale``.
    """
    scales = dict(lr_scales or {})
    buckets: dict[tuple[float, bool], tuple[list[nn.Parameter], list[str]]] = {
        (1.0, True): ([], []),
        (1.0, False): ([], []),
    }
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            is_kernel = isinstance(module, _KERNEL_MODULES) and param_name == "weight"
            decayed = is_kernel and (decay_depthwise or not _is_depthwise(module))
            params, names = buckets.setdefault((_scale_of(full_name, scales), decayed), ([], []))
            params.append(param)
            names.append(full_name)
    groups = []
    for scale in sorted({s for s, _ in buckets}, key=lambda s: (s != 1.0, s)):
        for decayed in (True, False):
            params, names = buckets.get((scale, decayed), ([], []))
            if params or scale == 1.0:
                groups.append(
                    {
                        "params": params,
                        "weight_decay": weight_decay if decayed else 0.0,
                        "lr_scale": scale,
                        "names": names,
                    }
                )
    return groups


def _scale_of(name: str, scales: dict[str, float]) -> float:
    """LR scale of a parameter: the longest matching prefix of ``scales``, else 1."""
    matches = [prefix for prefix in scales if name.startswith(prefix)]
    return float(scales[max(matches, key=len)]) if matches else 1.0


def build_optimizer(
    cfg: TrainConfig, model: nn.Module, *, lr_scales: dict[str, float] | None = None
) -> torch.optim.Optimizer:
    """SGD with momentum and L2 on the decay group, or decoupled AdamW (``cfg.optimizer``).

    The initial ``lr`` is ``cfg.lr`` times each group's scale; the training loop overwrites it
    every step from ``lr_at`` through ``set_lr``.

    Args:
        cfg: the train section.
        model: the module whose parameters are optimised.
        lr_scales: parameter-name prefix -> LR scale (see ``param_groups``).
    """
    groups = param_groups(model, cfg.weight_decay, lr_scales=lr_scales)
    for group in groups:
        group["lr"] = cfg.lr * group["lr_scale"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        if len(cfg.betas) != 2:
            raise ValueError(f"train.betas needs two values, got {cfg.betas}")
        beta1, beta2 = cfg.betas
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(beta1, beta2), eps=ADAMW_EPS)
    raise ValueError(f"unknown train.optimizer {cfg.optimizer!r} (expected 'sgd' or 'adamw')")


def lr_at(
    step: int,
    *,
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
    schedule: str = "cosine",
    steps_at: Sequence[float] = (),
    step_factor: float = 0.1,
) -> float:
    """Learning rate of optimizer step ``step`` (0-based), Model Garden semantics.

    ``"cosine"``: ``min_lr + (base_lr - min_lr) * (1 + cos(pi * min(s, T) / T)) / 2`` with
    ``min_lr = min_lr_ratio * base_lr`` and ``T = total_steps``, counted from step 0.
    ``"step"``: ``base_lr * step_factor ** n`` where ``n`` counts the boundaries
    ``floor(f * T)`` (``f`` in ``steps_at``) already reached (ReMaX: x0.1 at 85 % and 95 %).
    The first ``warmup_steps`` steps are replaced by a straight line from 0 to the schedule's
    value at ``warmup_steps``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if schedule not in ("cosine", "step"):
        raise ValueError(f"unknown schedule {schedule!r} (expected 'cosine' or 'step')")
    boundaries = sorted(math.floor(f * total_steps) for f in steps_at)

    def scheduled(s: int) -> float:
        if schedule == "step":
            return base_lr * step_factor ** sum(s >= b for b in boundaries)
        min_lr = min_lr_ratio * base_lr
        progress = min(s, total_steps) / total_steps
        return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    if step < warmup_steps:
        return scheduled(warmup_steps) * step / warmup_steps
    return scheduled(step)


def lr_of(cfg: TrainConfig, step: int) -> float:
    """``lr_at`` with the schedule of a train config."""
    return lr_at(
        step,
        base_lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        total_steps=cfg.max_steps,
        min_lr_ratio=cfg.min_lr_ratio,
        schedule=cfg.schedule,
        steps_at=cfg.lr_steps,
        step_factor=cfg.lr_step_factor,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr`` times its ``lr_scale`` (default 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
