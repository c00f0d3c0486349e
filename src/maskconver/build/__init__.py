"""Named choices from ``maskconver.config`` to objects: the dict-literal tables live here.

Tables: ``META_ARCHITECTURES`` (below: name -> the ``meta.base.MetaArchitecture`` entry of
that package, ``maskconver.meta.<name>.build.ENTRY``: a model with the target generator,
criterion, post-processor, teacher-forced training call and export graph that go with it),
``BACKBONES``, ``DECODERS`` and ``NORMS`` (``build/parts.py``). ``build_model(cfg.model,
num_classes)``, ``build_target_generator``, ``build_criterion`` and ``build_postprocessor``
dispatch on ``cfg.model.meta_architecture``; the transforms are shared. Every table entry
imports its module when it is called, so building the tiny MaskConver imports neither ResNet,
nor DR1Mask, nor onnxruntime (``tests/test_structure.py`` checks it on ``sys.modules``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from maskconver.build.parts import BACKBONES, DECODERS, NORMS, build_backbone, build_decoder
from maskconver.config import Config, ConfigError, ModelConfig
from maskconver.meta.base import MetaArchitecture

if TYPE_CHECKING:
    from maskconver.data.types import CategorySet, PanopticSample
    from maskconver.inference import PostProcessor

__all__ = [
    "BACKBONES",
    "DECODERS",
    "META_ARCHITECTURES",
    "NORMS",
    "MetaArchitecture",
    "build_backbone",
    "build_copy_paste",
    "build_criterion",
    "build_decoder",
    "build_eval_transforms",
    "build_model",
    "build_postprocessor",
    "build_target_generator",
    "build_train_transforms",
    "meta_architecture",
    "resolve_num_classes",
]

FLIP_PROB = 0.5


def resolve_num_classes(cfg: Config, categories: CategorySet) -> int:
    """``cfg.model.num_classes`` if set (must cover the label space), else the categories'."""
    needed = categories.num_classes
    if cfg.model.num_classes is None:
        return needed
    if cfg.model.num_classes < needed:
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} is too small: label space "
            f"'{categories.label_space}' of this dataset needs {needed} classes"
        )
    return cfg.model.num_classes


# --------------------------------------------------------------------------------------------
# Meta-architectures: one package each (``maskconver.meta.<name>``), imported when named


def _maskconver() -> MetaArchitecture:
    from maskconver.meta.maskconver.build import ENTRY

    return ENTRY


def _dr1mask() -> MetaArchitecture:
    from maskconver.meta.dr1mask.build import ENTRY

    return ENTRY


def _kmax() -> MetaArchitecture:
    from maskconver.meta.kmax.build import ENTRY

    return ENTRY


META_ARCHITECTURES: dict[str, Callable[[], MetaArchitecture]] = {
    "maskconver": _maskconver,
    "dr1mask": _dr1mask,
    "kmax": _kmax,
}


def meta_architecture(cfg: ModelConfig) -> MetaArchitecture:
    """The table entry named by ``cfg.meta_architecture`` (clear error listing the known ones)."""
    name = cfg.meta_architecture
    if name not in META_ARCHITECTURES:
        raise ConfigError(
            f"model.meta_architecture: unknown meta-architecture {name!r}; "
            f"choose from {sorted(META_ARCHITECTURES)}"
        )
    return META_ARCHITECTURES[name]()


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The model of ``cfg.meta_architecture`` with ``num_classes`` classes (weights loaded)."""
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    return meta_architecture(cfg).build_model(cfg, num_classes)


def build_target_generator(
    cfg: Config, categories: CategorySet, num_classes: int
) -> Callable[[PanopticSample], Any]:
    """The meta-architecture's target generator (``sample -> targets``)."""
    return meta_architecture(cfg.model).build_target_generator(cfg, categories, num_classes)


def build_criterion(cfg: Config, num_classes: int) -> nn.Module:
    """The meta-architecture's criterion (``(outputs, targets) -> dict of losses``)."""
    return meta_architecture(cfg.model).build_criterion(cfg, num_classes)


def build_postprocessor(cfg: Config, categories: CategorySet, num_classes: int) -> PostProcessor:
    """The meta-architecture's post-processor (outputs -> ``PanopticPrediction`` per image)."""
    return meta_architecture(cfg.model).build_postprocessor(cfg, categories, num_classes)


def build_train_transforms(cfg: Config) -> Any:
    """Random horizontal flip (if enabled) then large scale jitter to ``augment.input_size``."""
    from maskconver.data.transforms import Compose, LargeScaleJitter, RandomHorizontalFlip

    a = cfg.augment
    steps: list[Any] = [RandomHorizontalFlip(FLIP_PROB)] if a.hflip else []
    steps.append(LargeScaleJitter((a.input_size[0], a.input_size[1]), a.scale_min, a.scale_max))
    return Compose(steps)


def build_copy_paste(cfg: Config, categories: CategorySet) -> Any | None:
    """``PanopticCopyPaste`` when ``augment.copy_paste`` is on, else None.

    The pasted (second) image gets its own large scale jitter with the ``copy_paste_scale_*``
    range (reference 2.8); the first image goes through ``build_train_transforms``.
    """
    if not cfg.augment.copy_paste:
        return None
    from maskconver.data.copy_paste import PanopticCopyPaste
    from maskconver.data.transforms import LargeScaleJitter

    a = cfg.augment
    return PanopticCopyPaste(
        prob=a.copy_paste_prob,
        jitter=LargeScaleJitter(
            (a.input_size[0], a.input_size[1]), a.copy_paste_scale_min, a.copy_paste_scale_max
        ),
        thing_category_ids=[c.id for c in categories.categories if c.isthing],
    )


def build_eval_transforms(cfg: Config) -> Any:
    """Resize the longest side to ``eval.input_size``; pad to a square or a divisibility."""
    from maskconver.data.transforms import ResizePad

    return ResizePad(cfg.eval.input_size, cfg.eval.pad_divisibility)
