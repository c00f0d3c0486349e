"""Loading: defaults <- one YAML preset or file <- ``a.b=c`` overrides, strictly checked.

``load_config(preset_or_path, overrides)``:

1. starts from the dataclass defaults (``Config``);
2. merges ONE YAML file (a preset name from ``maskconver/configs/`` or a path);
3. applies ``a.b.c=value`` overrides (values parsed with ``yaml.safe_load``);
4. rejects unknown keys with a close-match hint (a key that moved: with its new place), and
   type-checks every value; building the ``Config`` then checks every range.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from maskconver.config.checks import ConfigError
from maskconver.config.migrate import moved_to, set_path
from maskconver.config.root import Config

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def list_presets() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (YAML/JSON serialisable)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """YAML text of the resolved config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _hint(key: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """Validate ``value`` against a type hint; returns the (possibly coerced) value."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_value(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string: accept it
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")


def _moved_error(path: str, value: Any, root: dict[str, Any]) -> ConfigError | None:
    """The "moved to" error of an old key at ``path`` (holding ``value``), if it is one."""
    leaf, node = path, value
    while isinstance(node, dict) and node:  # name the first key set below a moved section
        key = next(iter(node))
        leaf, node = f"{leaf}.{key}", node[key]
    for old in dict.fromkeys((leaf, path)):
        new = moved_to(old, root)
        if new is not None:
            return ConfigError(f"config key '{old}' moved to '{new}'")
    return None


def _from_dict(cls: type, data: Any, where: str, root: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from defaults updated with ``data`` (recursively, strictly)."""
    if not isinstance(data, dict):
        moved = _moved_error(where, data, root) if where else None
        raise moved or ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            moved = _moved_error(path, value, root)
            if moved is not None:
                raise moved
            prefix = f"{where}." if where else ""
            hint = _hint(str(key), names).replace("'", f"'{prefix}", 1)
            raise ConfigError(f"unknown config key '{path}'{hint}")
        field_type = hints[key]
        if dataclasses.is_dataclass(field_type):
            section = value if value is not None else {}
            kwargs[key] = _from_dict(field_type, section, path, root)  # type: ignore[arg-type]
        else:
            kwargs[key] = _check_value(value, field_type, path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - defensive
        raise ConfigError(f"{where}: {e}") from e


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.lr=0.1'`` -> ``('train.lr', 0.1)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': cannot parse value: {e}") from e
    return key, value


def resolve_preset(preset_or_path: str) -> Path:
    """Path of a preset name (``tiny``) or of a YAML file."""
    candidate = Path(preset_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"config file not found: {candidate}")
        return candidate
    path = PRESET_DIR / f"{preset_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset '{preset_or_path}'{_hint(preset_or_path, list_presets())}; "
            f"presets: {', '.join(list_presets())}"
        )
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with a clear error naming the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def config_from_dict(data: dict[str, Any]) -> Config:
    """Strictly build a ``Config`` from a (partial) nested dict in today's layout."""
    return typing.cast(Config, _from_dict(Config, data, "", data))


def load_config(preset_or_path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- one YAML preset or file <- ``a.b=c`` overrides, strictly checked."""
    tree: dict[str, Any] = {}
    if preset_or_path:
        tree = read_yaml(resolve_preset(preset_or_path))
    for text in overrides or []:
        key, value = parse_override(text)
        set_path(tree, key, value)
    return config_from_dict(tree)


def merge_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A new config: ``cfg`` with ``a.b=c`` overrides applied."""
    tree = to_dict(cfg)
    for text in overrides:
        key, value = parse_override(text)
        patch: dict[str, Any] = {}
        set_path(patch, key, value)
        tree = _deep_merge(tree, patch)
    return config_from_dict(tree)
