"""``Config``: every section of a run, checked when it is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from maskconver.config.checks import validate_fields
from maskconver.config.model import ModelConfig
from maskconver.config.run import (
    AugmentConfig,
    DataConfig,
    EvalConfig,
    PostprocessConfig,
    TrainConfig,
)


@dataclass
class Config:
    """Everything a run needs; stored in every checkpoint.

    Building one checks every field's declared range (``checks.validate_fields``; the sub-block
    of the meta-architecture that ``model.meta_architecture`` leaves out is not checked), then
    the cross-field checks of the sections (``ModelConfig.check`` runs the selected
    meta-architecture's).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        validate_fields(self, skip=self.model.unused_blocks())
        self.model.check()
        self.data.check()
        self.augment.check()
