"""Regenerates docs/config.md from the config dataclasses and the registries: `.venv/bin/python docs/generate.py`."""

from pathlib import Path

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

def _table(title: str, entry) -> str:
    doc = " ".join((entry.__doc__ or "").strip().split("\n\n")[0].split())
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
        for name, entry in registry.entries().items():
            text += _table(name, entry)
    return text


if __name__ == "__main__":
    (Path(__file__).parent / "config.md").write_text(config_reference())
