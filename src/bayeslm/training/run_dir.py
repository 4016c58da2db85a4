"""A training run's directory: what it holds (see `bayeslm.training.loop`), and the rules that keep it safe: the
directory owned as `bayeslm.outputs` says, the final model written whole or not at all, and metrics cut back to
the checkpoint a run resumes from."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import yaml

from bayeslm.distributions.lm import LM
from bayeslm.distributions.loading import BASE_RECORD


def save_model(model: LM, path: Path, *, merge_lora: bool, base=None) -> list[Path]:
    """Saves π_θ where transformers (and `bayeslm evaluate --model`) load it directly: a plain model; for a LoRA
    model also peft's adapter beside it (path's sibling `adapter`), or with `merge_lora: false` only the adapter,
    at `path`. An adapter carries a record of its base (`base`, the prior's source) for `load_lm`. Returns the
    directories written."""
    net = model.model
    if not hasattr(net, "peft_config"):
        _save(net, model, path)
        return [path]
    adapter = path if not merge_lora else path.with_name("adapter")
    _save(net, model, adapter, base=base)
    if not merge_lora:
        return [adapter]
    _save(copy.deepcopy(net).merge_and_unload(), model, path)
    return [path, adapter]


def _save(net, model: LM, path: Path, *, base=None):
    """Writes one model directory whole or not at all (a staging directory renamed over it)."""
    staging = path.with_name(path.name + ".writing")
    shutil.rmtree(staging, ignore_errors=True)
    net.save_pretrained(staging, safe_serialization=True)
    model.tokenizer.save_pretrained(staging)
    if base is not None:
        (staging / BASE_RECORD).write_text(json.dumps({"prior": base}), encoding="utf-8")
    if path.exists():
        shutil.rmtree(path)
    staging.rename(path)


def target_definition(config, base: Path) -> str:
    """The target as its user wrote it (the file's text, or the inline mapping), for the run's record."""
    if isinstance(config.target, dict):
        return yaml.safe_dump(config.target, sort_keys=False, allow_unicode=True)
    return (base / config.target).read_text(encoding="utf-8")


def truncate_metrics(path: Path, step: int):
    """Drops metric lines past the checkpoint resumed from: those steps are about to be trained again. A line cut
    short by a kill mid-write is dropped too."""
    if path.is_file():
        lines = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    lines.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        path.write_text("".join(line + "\n" for line in lines))
