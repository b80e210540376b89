"""Frozen config machinery: YAML presets and ``KEY=value`` overrides onto dataclasses.

A run config is a frozen dataclass whose fields are frozen dataclass *sections*. Values
are applied in one order: dataclass defaults, then a YAML preset, then ``section.key=value``
overrides from the command line. Unknown keys and values of the wrong type raise
:class:`ConfigError`, whose message names the key and the closest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message says which and what to do."""


def _closest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def keys(cls: type) -> list[str]:
    """Every dotted key of a config class, e.g. ``pipeline.cache``."""
    out = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += [f"{f.name}.{k}" for k in keys(tp)]
        else:
            out.append(f.name)
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (a YAML value or a command-line string) to type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_null = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_null and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(key, value, arg)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors) if errors else f"{key}: cannot use {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, choices))}")
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        (inner, *_rest) = typing.get_args(tp)
        return tuple(coerce(key, v, inner) for v in items if v != "")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, str)) and str(value).lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return str(value).lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{key}={value!r}: expected true or false (or 1/0)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected an integer") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected a number") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *path, last = dotted.split(".")
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: {part} is a value, not a section")
        node[last] = value
    return nested


def build(cls: type[T], values: Mapping[str, Any], *, prefix: str = "") -> T:
    """Make ``cls`` from nested ``values``, checking every key and type."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            valid = [f"{prefix}{k}" for k in keys(cls)]
            raise ConfigError(f"unknown config key {dotted!r}{_closest(dotted, valid)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{dotted} is a section: give {dotted}.<key>=value")
            kwargs[key] = build(tp, value, prefix=f"{dotted}.")
        else:
            kwargs[key] = coerce(dotted, value, tp)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from None


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested mappings; ``top`` wins."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML preset with the safe loader; a missing file names the path."""
    path = Path(path)
    if not path.is_file():
        presets = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise ConfigError(
            f"config preset {str(path)!r} does not exist{_closest(path.stem, presets)}; presets: {', '.join(presets)}"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["train.epochs=3", ...]`` to ``{"train.epochs": "3"}``; values stay strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=value (e.g. pipeline.cache=false)")
        out[key.strip()] = value.strip()
    return out


def load(cls: type[T], preset: str | Path | None = None, overrides: Mapping[str, str] | None = None) -> T:
    """Defaults, then the YAML ``preset``, then dotted ``overrides``; returns a frozen ``cls``."""
    values: dict[str, Any] = read_yaml(preset) if preset else {}
    values = merge(values, _nest(overrides or {}))
    return build(cls, values)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists)."""
    return dataclasses.asdict(config)
