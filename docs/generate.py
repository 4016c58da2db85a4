"""Regenerates docs/config.md from the config dataclasses and the registries: `.venv/bin/python docs/generate.py`."""

from pathlib import Path

from bayeslm.config import document
from bayeslm.training.config import TrainConfig
from bayeslm.training.objectives import OBJECTIVES

HEADER = """# Training config reference

`bayeslm train CONFIG.yaml --out RUN_DIR [--set key=value ...]` reads a YAML file with these keys. Unknown
keys, wrong types and out-of-range values are errors naming the key; `--set a.b=c` overrides any key (the value
is parsed as YAML). Nested sections (`lora`) are written as mappings, e.g. `lora: {r: 8}`.

These tables are generated from `bayeslm.training.config` and the objective registry by `docs/generate.py`; a
test keeps them in step with the code.

| key | type | default | meaning |
|---|---|---|---|
"""

OBJECTIVES_HEADER = """
## Objectives

`objective:` names one objective and, optionally, its options: `objective: klrl`, or
`objective: {dpg: {proposal: prior}}`; your own is named by its dotted path (`objective: {my_package.module:Mine:
{...}}`, see [extending.md](extending.md)). From Python the same options are keyword arguments:
`bl.DPG(proposal="prior")`. What each minimises is in [objectives.md](objectives.md).
"""


def _table(title: str, entry) -> str:
    doc = (entry.__doc__ or "").strip().splitlines()[0] if entry.__doc__ else ""
    rows = document(entry, "")
    body = "\n".join(rows) if rows else "| (no options) | | | |"
    return f"\n### `{title}`\n\n{doc}\n\n| option | type | default | meaning |\n|---|---|---|---|\n{body}\n"


def config_reference() -> str:
    text = HEADER + "\n".join(document(TrainConfig)) + "\n" + OBJECTIVES_HEADER
    for name, entry in OBJECTIVES.entries().items():
        text += _table(name, entry)
    return text


if __name__ == "__main__":
    (Path(__file__).parent / "config.md").write_text(config_reference())
