"""Dotted-path access to a tree of frozen dataclasses.

Generic machinery behind :mod:`dreamrl.config`: list every leaf field with its type and
documentation, read and replace values by dotted path or by a regex over paths, and
convert command-line strings to a field's type with errors that name the path.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any


class ConfigError(ValueError):
    """A configuration problem a user can act on: the message names the key."""


def leaf_paths(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of a config class as ``{dotted.path: type}``."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in fields(cls):
        typ = hints[f.name]
        path = prefix + f.name
        if dataclasses.is_dataclass(typ):
            out.update(leaf_paths(typ, path + "."))  # type: ignore[arg-type]
        else:
            out[path] = typ
    return out


def field_docs(cls: type, prefix: str = "") -> dict[str, str]:
    """The documentation string of every leaf field, by dotted path."""
    hints = typing.get_type_hints(cls)
    out: dict[str, str] = {}
    for f in fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            out.update(field_docs(typ, prefix + f.name + "."))  # type: ignore[arg-type]
        else:
            out[prefix + f.name] = f.metadata.get("doc", "")
    return out


def get(config: Any, path: str) -> Any:
    """The value at a dotted path."""
    for part in path.split("."):
        config = getattr(config, part)
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists), ready for JSON."""
    out = dataclasses.asdict(config)
    return json.loads(json.dumps(out))


def flatten(config: Any) -> dict[str, Any]:
    """``{dotted.path: value}`` for every leaf."""
    return {path: get(config, path) for path in leaf_paths(type(config))}


def _type_name(typ: Any) -> str:
    if typing.get_origin(typ) is tuple:
        return "a list of " + _type_name(typing.get_args(typ)[0]) + "s"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(typ, str(typ))


def coerce(path: str, typ: Any, value: Any) -> Any:
    """Convert ``value`` (a string from the command line or a preset value) to ``typ``.

    Raises ConfigError naming ``path`` and the expected type when it does not fit.
    """
    problem = ConfigError(f"{path}: expected {_type_name(typ)}, got {value!r}")
    if typing.get_origin(typ) is tuple:
        item = typing.get_args(typ)[0]
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            value = [v for v in re.split(r"[,\s]+", text) if v]
        if not isinstance(value, (list, tuple)):
            raise problem
        return tuple(coerce(path, item, v) for v in value)
    parse = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}.get(typ)
    if parse is None:
        raise problem
    out = parse(value)
    if out is None:
        raise problem
    return out


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).lower() if isinstance(value, str) else None
    return {
        "true": True,
        "yes": True,
        "1": True,
        "on": True,
        "false": False,
        "no": False,
        "0": False,
        "off": False,
    }.get(text or "")


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    number = _to_float(value)
    return int(number) if number is not None and number.is_integer() else None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _to_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _is_pattern(key: str) -> bool:
    return any(c in key for c in "*+?[]()|^$\\")


def resolve_key(cls: type, key: str) -> list[str]:
    """Leaf paths of ``cls`` a key names: itself, or every path a regex key fully matches."""
    paths = leaf_paths(cls)
    if key in paths:
        return [key]
    if _is_pattern(key):
        try:
            pattern = re.compile(key)
        except re.error as e:
            raise ConfigError(f"{key}: not a valid pattern ({e})") from None
        matches = [p for p in paths if pattern.fullmatch(p)]
        if matches:
            return matches
        raise ConfigError(f"{key}: the pattern matches no config key")
    close = [p for p in paths if p.endswith("." + key.split(".")[-1])]
    hint = f" (did you mean {', '.join(close[:4])}?)" if close else ""
    raise ConfigError(f"{key}: unknown config key{hint}")


def replace(config: Any, updates: Mapping[str, Any]) -> Any:
    """A new tree with ``{dotted.path or regex: value}`` applied in order."""
    cls = type(config)
    types_ = leaf_paths(cls)
    flat = flatten(config)
    for key, value in updates.items():
        for path in resolve_key(cls, key):
            flat[path] = coerce(path, types_[path], value)
    return unflatten(cls, flat)


def unflatten(cls: type, flat: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        typ = hints[f.name]
        path = prefix + f.name
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = unflatten(typ, flat, path + ".")  # type: ignore[arg-type]
        elif path in flat:
            kwargs[f.name] = flat[path]
    return cls(**kwargs)


def from_nested(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a tree from :func:`to_dict` output, checking every key and type."""
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, prefix + key + ".")
            else:
                flat[prefix + key] = value

    walk(data, "")
    types_ = leaf_paths(cls)
    unknown = sorted(set(flat) - set(types_))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown config key in saved config")
    return unflatten(cls, {k: coerce(k, types_[k], v) for k, v in flat.items()})


def diff(old: Any, new: Any) -> dict[str, tuple[Any, Any]]:
    """``{path: (old, new)}`` for every leaf that differs."""
    a, b = flatten(old), flatten(new)
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``['a.b=1', 'c=x']`` to ``{'a.b': '1', 'c': 'x'}``, refusing malformed items."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{item!r}: overrides are key=value, e.g. run.train_ratio=64")
        key, value = item.split("=", 1)
        key = key.strip().lstrip("-")
        if not key:
            raise ConfigError(f"{item!r}: missing key before '='")
        out[key] = value
    return out
