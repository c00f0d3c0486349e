"""Typed configuration: dataclass defaults, one YAML preset, ``--set a.b=c`` overrides.

The sections, one module each: ``model`` (the shared model parts and ``ModelConfig``),
``maskconver``, ``dr1mask`` and ``kmax`` (each meta-architecture's sub-block:
``model.maskconver``, ``model.dr1mask``, ``model.kmax``), ``run`` (data, augment, train, eval,
postprocess), ``root`` (``Config``).
A field's range is declared beside it (``checks``); ``loading`` reads YAML and overrides;
``migrate`` moves the keys of older checkpoint formats.

Only ``maskconver.build``, ``engine/`` and ``commands/`` read a ``Config``; modules never do.
"""

from maskconver.config.checks import Check, ConfigError, check, checks, validate_fields
from maskconver.config.dr1mask import DR1MaskConfig, DR1MaskMergeConfig
from maskconver.config.kmax import KMaXConfig, KMaXLossConfig, KMaXMergeConfig
from maskconver.config.loading import (
    PRESET_DIR,
    config_from_dict,
    dump_config,
    list_presets,
    load_config,
    merge_overrides,
    parse_override,
    read_yaml,
    resolve_preset,
    to_dict,
)
from maskconver.config.maskconver import (
    LossConfig,
    MaskConverConfig,
    MaskConverMergeConfig,
    TargetConfig,
)
from maskconver.config.migrate import (
    CONFIG_FORMAT,
    MERGE_THRESHOLDS,
    MOVED_KEYS,
    migrate_config_tree,
    moved_to,
)
from maskconver.config.model import (
    MAX_PROPOSALS,
    META_ARCHITECTURE_NAMES,
    BackboneConfig,
    DecoderConfig,
    DR1Config,
    HeadConfig,
    ModelConfig,
)
from maskconver.config.root import Config
from maskconver.config.run import (
    AugmentConfig,
    DataConfig,
    EvalConfig,
    PostprocessConfig,
    TrainConfig,
)

__all__ = [
    "CONFIG_FORMAT",
    "MAX_PROPOSALS",
    "MERGE_THRESHOLDS",
    "META_ARCHITECTURE_NAMES",
    "MOVED_KEYS",
    "PRESET_DIR",
    "AugmentConfig",
    "BackboneConfig",
    "Check",
    "Config",
    "ConfigError",
    "DR1Config",
    "DR1MaskConfig",
    "DR1MaskMergeConfig",
    "DataConfig",
    "DecoderConfig",
    "EvalConfig",
    "HeadConfig",
    "KMaXConfig",
    "KMaXLossConfig",
    "KMaXMergeConfig",
    "LossConfig",
    "MaskConverConfig",
    "MaskConverMergeConfig",
    "ModelConfig",
    "PostprocessConfig",
    "TargetConfig",
    "TrainConfig",
    "check",
    "checks",
    "config_from_dict",
    "dump_config",
    "list_presets",
    "load_config",
    "merge_overrides",
    "migrate_config_tree",
    "moved_to",
    "parse_override",
    "read_yaml",
    "resolve_preset",
    "to_dict",
    "validate_fields",
]
