"""Regenerates docs/config.md and src/bayeslm/schema.json (what `bayeslm.preflight` checks configs against before
any heavy import) from the config dataclasses and the registries: `.venv/bin/python docs/generate.py`."""

import dataclasses
import json
import types
import typing
from pathlib import Path

from bayeslm import config
from bayeslm.config import document
from bayeslm.modelling.potentials import POTENTIALS
from bayeslm.modelling.rewards import REWARDS
from bayeslm.samplers import SAMPLERS
from bayeslm.training.config import TrainConfig
from bayeslm.training.objectives import OBJECTIVES

HEADER = """# Config reference: training, objectives, samplers, potentials, rewards

`bayeslm train CONFIG.yaml --out RUN_DIR [--set key=value ...]` reads a YAML file with these keys. Unknown
keys, wrong types and out-of-range values are errors naming the key; `--set a.b=c` overrides any key (the value
is parsed as YAML). Nested sections (`lora`) are written as mappings, e.g. `lora: {r: 8}`.

These tables are generated from `bayeslm.training.config` and the objective registry by `docs/generate.py`; a
test keeps them in step with the code.

| key | type | default | meaning |
|---|---|---|---|
"""

def _table(title: str, entry, aliases: list[str]) -> str:
    doc = " ".join((entry.__doc__ or "").strip().split("\n\n")[0].split())
    if aliases:
        doc += f" Also spelled {', '.join(f'`{a}`' for a in aliases)}."
    rows = document(entry, "")
    body = "\n".join(rows) if rows else "| (no options) | | | |"
    return f"\n### `{title}`\n\n{doc}\n\n| option | type | default | meaning |\n|---|---|---|---|\n{body}\n"


SECTIONS = [
    (OBJECTIVES, """
## Objectives

`objective:` names one objective and, optionally, its options: `objective: klrl`, or
`objective: {dpg: {proposal: prior}}`; your own is named by its dotted path (`objective: {my_package.module:Mine:
{...}}`, see [extending.md](extending.md)). From Python the same options are keyword arguments:
`bl.DPG(proposal="prior")`. What each minimises is in [objectives.md](objectives.md).
"""),
    (SAMPLERS, """
## Samplers

`bayeslm sample --method NAME` with each option as a flag (`--ess-threshold 0.3`), or from Python
`bl.sample(target, "smc", n=64, ess_threshold=0.3)`; your own is named by its dotted path and takes its options as
`--set name=value`. What each guarantees is in [samplers.md](samplers.md).
"""),
    (POTENTIALS, """
## Potentials (target files)

Each entry of a target file's `potentials:` list is one kind with its options, e.g.
`- exponential: {reward: sentiment, beta: 0.1}`; the potentials multiply. From Python:
`prior * bl.Exponential(bl.rewards.sentiment(), beta=0.1)`.
"""),
    (REWARDS, """
## Rewards

A reward, predicate or feature is a name (`sentiment`), a mapping from a name to its options
(`{keyword: {words: [movie], case_sensitive: true}}`), to its first option alone (`{keyword: [movie]}`), or the
dotted path of your own function `f(texts, prompts) -> floats`.
"""),
]


def config_reference() -> str:
    text = HEADER + "\n".join(document(TrainConfig)) + "\n"
    for registry, header in SECTIONS:
        text += header
        aliases = registry.aliases()
        for name, entry in registry.entries().items():
            text += _table(name, entry, [alias for alias, of in aliases.items() if of == name])
    return text


def _type_text(tp) -> str:
    """A type as text that `bayeslm.preflight` evaluates back: builtins, None, Literal, list, dict, the nested
    sections by name; anything else (an object built by code) is Any."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is list:
        return f"list[{_type_text(args[0])}]" if args else "list"
    if tp is dict or origin is dict:
        return "dict"
    if tp is type(None):
        return "None"
    if tp in (int, float, str, bool):
        return tp.__name__
    if dataclasses.is_dataclass(tp):
        return tp.__name__
    return "Any"


def _fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        check = f.metadata.get("check")
        out[f.name] = {
            "type": "Any" if f.metadata.get("convert") else _type_text(hints[f.name]),
            "required": f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            "check": check.__name__ if check is not None and getattr(config, check.__name__, None) is check else None,
            "doc": f.metadata.get("doc", "")}
    return out


def schema() -> dict:
    from bayeslm.training.config import LoRA

    return {"train": _fields(TrainConfig), "section": {"LoRA": _fields(LoRA)},
            **{kind: {name: _fields(entry) for name, entry in registry.entries().items()
                      if dataclasses.is_dataclass(entry)}
               for kind, registry in (("objective", OBJECTIVES), ("sampler", SAMPLERS), ("potential", POTENTIALS))},
            "aliases": {kind: registry.aliases() for kind, registry in (("objective", OBJECTIVES),
                                                                         ("sampler", SAMPLERS),
                                                                         ("potential", POTENTIALS))}}


SCHEMA = Path(__file__).parent.parent / "src" / "bayeslm" / "schema.json"


if __name__ == "__main__":
    (Path(__file__).parent / "config.md").write_text(config_reference())
    SCHEMA.write_text(json.dumps(schema(), indent=1, sort_keys=True) + "\n")
