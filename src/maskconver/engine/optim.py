"""Optimizer, weight-decay parameter groups and the learning-rate schedule.

Weight-decay coverage follows the reference (section 1.9): decay on conv/linear kernels and on
the class-embedding table; never on norm parameters, biases, layer-scale gammas or (by default)
depthwise kernels. SGD applies it as an L2 gradient term ``wd * w`` on that group only, which is
exactly ``torch.optim.SGD(weight_decay=wd)``; AdamW applies decoupled decay
``w -= lr * wd * w``, which is Model Garden's ``AdamWeightDecay``.
"""

from __future__ import annotations

import math
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
    model: nn.Module, weight_decay: float, *, decay_depthwise: bool = False
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and a non-decayed group.

    Args:
        model: the (bare) model.
        weight_decay: decay strength for the decayed group.
        decay_depthwise: also decay depthwise conv kernels (``regularize_depthwise``; off in the
            reference).

    Returns:
        ``[{"params": [...], "weight_decay": wd, "names": [...]},
        {"params": [...], "weight_decay": 0.0, "names": [...]}]``; every trainable parameter
        appears exactly once (shared parameters are counted at their first occurrence).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    decay_names: list[str] = []
    no_decay_names: list[str] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            is_kernel = isinstance(module, _KERNEL_MODULES) and param_name == "weight"
            if is_kernel and (decay_depthwise or not _is_depthwise(module)):
                decay.append(param)
                decay_names.append(full_name)
            else:
                no_decay.append(param)
                no_decay_names.append(full_name)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum and L2 on the decay group, or decoupled AdamW (``cfg.optimizer``).

    The initial ``lr`` is ``cfg.lr``; the training loop overwrites it every step from ``lr_at``.
    """
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        if len(cfg.betas) != 2:
            raise ValueError(f"train.betas needs two values, got {cfg.betas}")
        beta1, beta2 = cfg.betas
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(beta1, beta2), eps=ADAMW_EPS)
    raise ValueError(f"unknown train.optimizer {cfg.optimizer!r} (expected 'sgd' or 'adamw')")


def lr_at(
    step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> float:
    """Learning rate of optimizer step ``step`` (0-based), Model Garden semantics.

    ``cosine(s) = min_lr + (base_lr - min_lr) * (1 + cos(pi * min(s, T) / T)) / 2`` with
    ``min_lr = min_lr_ratio * base_lr`` and ``T = total_steps``, counted from step 0. The first
    ``warmup_steps`` steps are replaced by a straight line from 0 to ``cosine(warmup_steps)``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")

    def cosine(s: int) -> float:
        min_lr = min_lr_ratio * base_lr
        progress = min(s, total_steps) / total_steps
        return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    if step < warmup_steps:
        return cosine(warmup_steps) * step / warmup_steps
    return cosine(step)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
