"""Generic stacking of per-image training targets into a batch (every meta-architecture's).

A meta-architecture's per-image targets are a dataclass whose class attribute ``batch_type``
names its batch dataclass; the batch dataclass derives from ``StackedFields``, which stacks and
moves every field generically: a tensor field is stacked, a per-level list of tensors is stacked
level by level, an int or bool becomes an int64 ``[B]`` tensor, a field that is None for every
image stays None. A new target is therefore one field in each dataclass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, TypeVar

import torch
from torch import Tensor

BatchT = TypeVar("BatchT", bound="StackedFields")


def stack_field(values: Sequence[Any]) -> Any:
    """Stack one field over the batch: tensors, per-level tensor lists, ints, or all None."""
    first = values[0]
    missing = [v is None for v in values]
    if any(missing):
        if not all(missing):
            raise ValueError("stacking targets: a field is None for some images only")
        return None
    if isinstance(first, Tensor):
        return torch.stack(list(values))
    if isinstance(first, list):
        return [torch.stack([v[i] for v in values]) for i in range(len(first))]
    if isinstance(first, (int, bool)):
        return torch.tensor(list(values), dtype=torch.int64)
    raise TypeError(f"stacking targets: cannot stack a field of type {type(first).__name__}")


def move_field(value: Any, device: torch.device | str) -> Any:
    """A tensor or list of tensors moved to ``device``; anything else unchanged."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [v.to(device) for v in value]
    return value


class StackedFields:
    """Base of a dataclass of batched targets: ``stack`` per-image targets, move with ``to``."""

    @classmethod
    def stack(cls: type[BatchT], items: Sequence[Any]) -> BatchT:
        """Stack per-image targets (a dataclass with the same field names; equal shapes)."""
        if not items:
            raise ValueError(f"{cls.__name__}.stack: no targets to stack")
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        return cls(**{n: stack_field([getattr(t, n) for t in items]) for n in names})

    def to(self: BatchT, device: torch.device | str) -> BatchT:
        """Move every tensor to ``device``."""
        names = [f.name for f in fields(self)]  # type: ignore[arg-type]
        return type(self)(**{n: move_field(getattr(self, n), device) for n in names})
