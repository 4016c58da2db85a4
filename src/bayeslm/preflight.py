"""Config errors in well under a second: target files and training configs checked before torch, transformers or
any model is imported.

The full validation (`bayeslm.config.load` over the registries' dataclasses) needs the modules that declare
them, and those import torch: seconds before a typo could be reported. So `schema.json`, generated from the same
dataclasses by docs/generate.py (a test keeps it in step), describes every section, and this module rebuilds
light stand-ins of those dataclasses from it and runs the very same `load` on them: the messages are the full
validation's own. What needs code to check (a reward's options, your own entries named by dotted path, model
directories) is left to the full validation that follows.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import operator
import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

from bayeslm import config
from bayeslm.config import ConfigError, load, load_yaml, mapping_with
from bayeslm.modelling.prompts import MAX_NEW_TOKENS, PROMPT_KEYS, TARGET_KEYS, read_prompts
from bayeslm.registry import unknown_entry

SCHEMA = Path(__file__).with_name("schema.json")
# What a drawn sample holds in memory until it is written (its token ids, its log-probabilities under the
# sampler, the prior and the target, its text): the constants cover what 40,000 toy samples of 8 tokens held.
SAMPLE_BYTES, TOKEN_BYTES = 512, 96


def check_target(data, base: Path = Path(".")) -> int | None:
    """Raises ConfigError for what a target file's data gets wrong that can be told without code: its keys, its
    potentials' kinds and options, and its prompts (a list, or a text, JSON-lines or CSV file; a Parquet file or
    a dataset needs its library, and is left to the full validation). Returns the number of prompts when it was
    read."""
    mapping_with("target", data, {"prior", "potentials"}, TARGET_KEYS - {"prior", "potentials"})
    entries = data["potentials"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"potentials: expected a non-empty list, got {entries!r}")
    for i, entry in enumerate(entries):
        check_entry("potential", entry, f"potentials[{i}]")
        _language(entry, base, f"potentials[{i}]")
    light = not ({"prompts_dataset", "prompts_file"} & set(data)) or (
        isinstance(data.get("prompts_file"), str) and Path(data["prompts_file"]).suffix in (".txt", ".jsonl", ".csv")
        and (base / data["prompts_file"]).is_file())
    if light:
        return len(read_prompts({k: v for k, v in data.items() if k in PROMPT_KEYS}, base)[0])
    return None


def check_train(data: dict, base: Path) -> None:
    """Raises ConfigError for what a training config's data (and its target file) gets wrong that can be told
    without code."""
    load(_section("train"), data)
    objective = data.get("objective")
    if objective is not None:
        check_entry("objective", objective, "objective")
    target = data.get("target")
    if isinstance(target, dict):
        check_target(target, base)
    elif isinstance(target, str) and (base / target).is_file():
        check_target_file(base / target)


def check_target_file(path: Path, n: int | None = None) -> None:
    """The target file's data (`check_target`), and, given `n` samples per prompt, that they fit in memory."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return  # the full loader says what is wrong with reading it
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    prompts = check_target(data, path.parent)
    tokens = data.get("max_new_tokens", MAX_NEW_TOKENS)
    if n is not None and prompts and isinstance(tokens, int) and tokens > 0:
        check_fits_memory(n, prompts, tokens)


def check_fits_memory(n: int, prompts: int, max_new_tokens: int) -> None:
    """Refuses -n whose samples, held until they are written, could not fit in the memory available now: found
    at once rather than after hours of sampling (or never, the machine swapping)."""
    available = _available_memory()
    need = n * prompts * (SAMPLE_BYTES + TOKEN_BYTES * max_new_tokens)
    if available is not None and need > available:
        fits = available // (prompts * (SAMPLE_BYTES + TOKEN_BYTES * max_new_tokens))
        raise ConfigError(f"-n {n}: {prompts} prompt(s) × {n:,} samples of up to {max_new_tokens} tokens would "
                          f"hold about {need / 2**30:.0f} GiB until written, and {available / 2**30:.0f} GiB are "
                          f"available: draw at most about {fits:,} per prompt, and more in further runs with "
                          "other --seed values")


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable; else free pages; None if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_entry(kind: str, spec, where: str):
    """A registry entry written as NAME or {NAME: {options}}: a known name (or a dotted path, left to the full
    validation) and, for a known one, its options."""
    names = schema()[kind]
    if isinstance(spec, str) and kind != "potential":  # a potential is always {kind: options}
        name, options = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        name, options = next(iter(spec.items()))
    else:
        return  # an object built in Python, or a shape the full validation explains
    if ":" in str(name):
        return
    name = canonical(kind, name)
    if name not in names:
        raise ConfigError(f"{where}: {unknown_entry(kind, name, names)}")
    if isinstance(options, dict):
        load(_section(f"{kind}:{name}"), options, f"{where}.{name}")


def canonical(kind: str, name):
    """The entry's name for `name`, which may be an alias (an older spelling, e.g. best-of-n)."""
    return schema().get("aliases", {}).get(kind, {}).get(name, name)


# A structured potential's kind of language and where its source is: inline (the option) or in a file.
LANGUAGES = {"regex": ("regex", "pattern", None), "grammar": ("lark", "lark", "file"),
             "json_schema": ("json_schema", "schema", "file")}


def _language(entry, base: Path, where: str) -> None:
    """The syntax of a regex, grammar or JSON schema potential (llguidance's check needs no tokenizer); a file
    that cannot be read or parsed is left to the full validation, which says so."""
    if not (isinstance(entry, dict) and len(entry) == 1):
        return
    name, options = next(iter(entry.items()))
    if name not in LANGUAGES or not isinstance(options, dict):
        return
    kind, inline, file = LANGUAGES[name]
    source = options.get(inline)
    if source is None and file and isinstance(options.get(file), str):
        try:
            text = (base / options[file]).read_text(encoding="utf-8")
            source = json.loads(text) if kind == "json_schema" else text
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return
    if source is None:
        return
    from bayeslm.distributions.grammars import checked

    try:
        checked(kind, source)
    except ConfigError as error:
        raise ConfigError(f"{where}.{name}: {error}") from None


@cache
def schema() -> dict:
    """Every section's fields: type (as text), whether required, range check and doc (docs/generate.py)."""
    return json.loads(SCHEMA.read_text(encoding="utf-8"))


@cache
def _section(key: str):
    """A stand-in dataclass for a section of the schema ("train", "objective:dpg", ...): its fields' names,
    types, whether each is required and its range check when that is one of bayeslm.config's."""
    kind, _, name = key.partition(":")
    fields = schema()["train"] if kind == "train" else schema()[kind][name]
    made = []
    for field_name, spec in fields.items():
        check = getattr(config, spec["check"]) if spec.get("check") else None
        tp = _type(spec["type"], {} if kind == "section" else _nested())  # sections (LoRA) hold no sections
        metadata = {"doc": spec["doc"], "check": check, "convert": None, "serialise": None, "kind": None}
        default = dataclasses.MISSING if spec["required"] else None
        made.append((field_name, tp, dataclasses.field(default=default, metadata=metadata)))
    label = {"train": "TrainConfig", "section": name}.get(kind, name)  # as the full validation names it in errors
    return dataclasses.make_dataclass(label, made, kw_only=True)


@cache
def _nested() -> dict:
    """The sections a type may name (LoRA in TrainConfig)."""
    return {name: _section(f"section:{name}") for name in schema().get("section", {})}


def _type(text: str, sections: dict):
    """A type from its text in the schema (docs/generate.py writes it): int, float, str, bool, None, Any, dict,
    list[T], Literal[...], a section's name, or a union of them with " | "."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth == 0 and text.startswith(" | ", i):
            parts.append(text[start:i])
            start = i + 3
    parts.append(text[start:])
    if len(parts) > 1:
        return functools.reduce(operator.or_, [_type(part, sections) for part in parts])
    if text.startswith("Literal["):
        return Literal[tuple(ast.literal_eval(text[len("Literal"):]))]  # a list of plain literals, no code
    if text.startswith("list["):
        return list[_type(text[5:-1], sections)]
    simple = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None), "Any": Any, "dict": dict,
              "list": list}
    return simple.get(text) or sections.get(text, Any)
