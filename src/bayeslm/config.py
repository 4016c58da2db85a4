"""Strict configs: nested dataclasses loaded from YAML, every error naming the key and what was expected.

`load(cls, data)` checks unknown keys, types (bool, int, float, str, lists, optional values, nested
dataclasses, `Literal` choices) and each field's `check` (a range) from its metadata. `override(data, "a.b=c")`
applies a `--set` on the command line, the value parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config or target file that cannot be used as written; the message names the field."""


def unknown_keys(where: str, unknown, allowed) -> str:
    """The message for keys a section does not know: the closest allowed key of each, then all of them."""
    unknown, allowed = sorted(map(str, unknown)), sorted(map(str, allowed))
    close = {k: m[0] for k in unknown if (m := difflib.get_close_matches(k, allowed, n=1))}
    hint = f" (did you mean {', '.join(f'{m!r} for {k!r}' for k, m in close.items())}?)" if close else ""
    return f"{where}: unknown key(s) {unknown}{hint}; remove or rename them; allowed keys: {allowed}"


def field(default=dataclasses.MISSING, *, doc: str = "", check=None, default_factory=dataclasses.MISSING):
    """A dataclass field with a documentation line and an optional check `(value) -> error text or None`."""
    kwargs = {"metadata": {"doc": doc, "check": check}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, **kwargs)
    return dataclasses.field(default=default, **kwargs)


def positive(value) -> str | None:
    return None if value is None or value > 0 else "must be > 0"


def non_negative(value) -> str | None:
    return None if value is None or value >= 0 else "must be >= 0"


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(tp, value, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _convert(option, value, where)
            except ConfigError as error:
                errors.append((option, error))
        for option, error in errors:  # a mapping meant for a section: its own error says what is wrong inside
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                raise error
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return load(tp, value, where)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")


def load(cls, data, where: str = ""):
    """An instance of dataclass `cls` from a mapping, validated strictly."""
    label = where or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(unknown_keys(label, unknown, fields))
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                doc = f.metadata.get("doc")
                raise ConfigError(f"{key}: required but missing; add `{name}: ...` to {where or 'the config'}"
                                  + (f" ({doc})" if doc else ""))
            continue
        values[name] = _convert(hints[name], data[name], key)
        check = f.metadata.get("check")
        problem = check(values[name]) if check else None
        if problem:
            raise ConfigError(f"{key}: {problem}, got {data[name]!r}")
    return cls(**values)


def override(data: dict, assignment: str) -> dict:
    """Applies `a.b=c` to nested config data (the value parsed as YAML); returns the data."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set train.steps=100")
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {part} is not a mapping")
    try:
        node[last] = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({error})") from None
    return data


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def document(cls, prefix: str = "") -> list[str]:
    """One line per key: name, type, default and documentation (for docs/ and --help)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        section = [t for t in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(t)]
        if section:
            if f.default is None:  # an optional section: say what null means, then its keys
                lines.append(f"| `{key}` | a mapping or null | `null` | {f.metadata.get('doc', '')} |")
            lines += document(section[0], key + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        lines.append(f"| `{key}` | {_describe(hints[f.name])} | `{yaml.safe_dump(default).strip().removesuffix('...').strip()}` "
                     f"| {f.metadata.get('doc', '')} |")
    return lines
