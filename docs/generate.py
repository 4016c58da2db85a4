"""Regenerates docs/config.md from the config dataclasses: `.venv/bin/python docs/generate.py`."""

from pathlib import Path

from bayeslm.config import document
from bayeslm.train_config import TrainConfig

HEADER = """# Training config reference

`bayeslm train CONFIG.yaml --out RUN_DIR [--set key=value ...]` reads a YAML file with these keys. Unknown
keys, wrong types and out-of-range values are errors naming the key; `--set a.b=c` overrides any key (the value
is parsed as YAML). Nested sections (`lora`, `klrl`, `dpg`) are written as mappings, e.g. `lora: {r: 8}`.

This table is generated from `bayeslm.train_config` by `docs/generate.py`; a test keeps it in step with the code.

| key | type | default | meaning |
|---|---|---|---|
"""


def config_reference() -> str:
    return HEADER + "\n".join(document(TrainConfig)) + "\n"


if __name__ == "__main__":
    (Path(__file__).parent / "config.md").write_text(config_reference())
