"""Strict configs: nested dataclasses loaded from YAML, every error naming the key and what was expected.

`load(cls, data)` checks unknown keys, types (bool, int, float, str, lists, optional values, nested
dataclasses, `Literal` choices) and each field's `check` (a range) from its metadata. `override(data, "a.b=c")`
applies a `--set` on the command line, the value parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config or target file that cannot be used as written; the message names the field."""


# The most values a document may expand to, its aliases followed: a config is small, and an alias bomb (aliases of
# aliases, each doubling the data) is refused before it is built rather than after it fills the memory.
MAX_EXPANDED = 100_000


class _StrictLoader(yaml.SafeLoader):
    """YAML as people write it: a key given twice is an error (PyYAML keeps the last silently), merge keys (`<<`)
    work as everywhere else, numbers like 1e-3 are numbers (YAML 1.1 reads them as text; YAML 1.2 and every other
    tool read them as floats), and a document may expand to at most MAX_EXPANDED values."""

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return self.construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:  # the keys as written: merged ones (`<<`) may be overridden, not repeated
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"the key {key!r} is given twice (line {key_node.start_mark.line + 1}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(node, sizes: dict, open_nodes: set) -> int:
    """How many values `node` stands for with every alias followed (memoised: linear in the document)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise ConfigError(f"an alias refers to the value that contains it (line {node.start_mark.line + 1}): such "
                          "a value never ends; copy the part you need instead")
    open_nodes.add(id(node))
    children = ([part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode)
                else node.value if isinstance(node, yaml.SequenceNode) else [])
    size = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(id(node))
    if size > MAX_EXPANDED:
        raise ConfigError(f"the value at line {node.start_mark.line + 1} expands to more than {MAX_EXPANDED:,} "
                          "values once its aliases (*name) are followed: a config never needs that many; write "
                          "it without nested aliases")
    sizes[id(node)] = size
    return size


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


def load_yaml(text: str):
    """The data of a YAML document (see `_StrictLoader`); malformed YAML is a ConfigError naming line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader: plain data only
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = error.problem or error.context or "malformed"
        hint = " (YAML indents with spaces, never tabs)" if "\\t" in problem else ""
        raise ConfigError(f"not valid YAML{where}: {problem}{hint}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"not valid YAML: {error}") from None


def unknown_keys(where: str, unknown, allowed) -> str:
    """The message for keys a section does not know: the closest allowed key of each, then all of them."""
    unknown, allowed = sorted(map(str, unknown)), sorted(map(str, allowed))
    close = {k: m[0] for k in unknown if (m := difflib.get_close_matches(k, allowed, n=1))}
    hint = f" (did you mean {', '.join(f'{m!r} for {k!r}' for k, m in close.items())}?)" if close else ""
    return f"{where}: unknown key(s) {unknown}{hint}; remove or rename them; allowed keys: {allowed}"


def mapping_with(where: str, data, required: set[str], optional: set[str]) -> dict:
    """`data`, checked to be a mapping with every `required` key and no key outside `required | optional`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {sorted(required | optional)}, got {data!r}")
    unknown = set(data) - required - optional
    if unknown:
        raise ConfigError(unknown_keys(where, unknown, required | optional))
    missing = required - set(data)
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {sorted(missing)}; add them (allowed keys: "
                          f"{sorted(required | optional)})")
    return data


def field(default=dataclasses.MISSING, *, doc: str = "", check=None, default_factory=dataclasses.MISSING,
          convert=None, serialise=None, kind: str | None = None):
    """A dataclass field with a documentation line and an optional check `(value) -> error text or None`.

    `convert(value, where)` turns the value as written (after the type check) into what the field holds, e.g. a
    registry entry from its spec; `serialise(value)` turns it back for `to_dict`; `kind` says in the docs what
    may be written (default: from the type)."""
    kwargs = {"metadata": {"doc": doc, "check": check, "convert": convert, "serialise": serialise, "kind": kind}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, **kwargs)
    return dataclasses.field(default=default, **kwargs)


def positive(value) -> str | None:
    return None if value is None or value > 0 else "must be > 0"


def non_negative(value) -> str | None:
    return None if value is None or value >= 0 else "must be >= 0"


def unit_interval(value) -> str | None:
    return None if value is None or 0 <= value <= 1 else "must be in [0, 1]"


def seed_range(value) -> str | None:
    return None if value is None or 0 <= value < 2 ** 63 else "must be in [0, 2^63): torch's seeds are 64-bit"


def fraction(value) -> str | None:
    return None if value is None or 0 < value < 1 else "must be in (0, 1)"


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
            if dataclasses.is_dataclass(option) and isinstance(value, dict) or "finite" in str(error):
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
        if isinstance(value, tp):  # built in Python, checked when it was
            return value
        if isinstance(value, dict):
            return load(tp, value, where)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
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
        values[name] = _field_value(f, hints[name], data[name], key)
    return cls(**values)


def _field_value(f, tp, value, key: str):
    converted = _convert(tp, value, key)
    check = f.metadata.get("check")
    problem = check(converted) if check else None
    if problem:
        raise ConfigError(f"{key}: {problem}, got {value!r}")
    convert = f.metadata.get("convert")
    return convert(converted, key) if convert else converted


def validate(instance, where: str = ""):
    """Checks the fields of a dataclass built in Python as `load` checks YAML (types, ranges); raises
    ConfigError naming the field."""
    label = where or type(instance).__name__
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        if f.init and not f.metadata.get("convert"):
            _field_value(f, hints[f.name], getattr(instance, f.name), f"{label}.{f.name}")


def override(data: dict, assignment: str) -> dict:
    """Applies `a.b=c` to nested config data (the value parsed as YAML); returns the data."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set train.steps=100")
    *parents, last = key.split(".")
    node = data
    for part, child in zip(parents, parents[1:] + [last]):
        if node.get(part) == child:  # a registry entry named alone, `objective: klrl`, is `{klrl: {}}`
            node[part] = {child: {}}
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {part} is not a mapping")
    try:
        node[last] = load_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({error})") from None
    return data


def to_dict(config) -> dict:
    """The plain data of a config (what `load` reads back): sections as mappings, registry entries as specs."""
    out = {}
    for f in dataclasses.fields(config):
        value, serialise = getattr(config, f.name), f.metadata.get("serialise")
        out[f.name] = serialise(value) if serialise else _plain(value)
    return out


def _plain(value):
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def document(cls, prefix: str = "") -> list[str]:
    """One line per key: name, type, default and documentation (for docs/ and --help). A registry entry's field
    shows the entry's name; its options are documented with the entry."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key, serialise = f"{prefix}{f.name}", f.metadata.get("serialise")
        section = [] if serialise else [t for t in (hints[f.name], *typing.get_args(hints[f.name]))
                                        if dataclasses.is_dataclass(t)]
        if section:
            if f.default is None:  # an optional section: say what null means, then its keys
                lines.append(f"| `{key}` | a mapping or null | `null` | {f.metadata.get('doc', '')} |")
            lines += document(section[0], key + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        kind = f.metadata.get("kind") or _describe(hints[f.name])
        if serialise:
            default, kind = next(iter(serialise(default))), "a name, or a mapping {name: {option: value}}"
        shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"| `{key}` | {kind} | `{shown}` | {f.metadata.get('doc', '')} |")
    return lines
