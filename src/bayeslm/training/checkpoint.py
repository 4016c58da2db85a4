"""Checkpoints that survive interruption: written whole or not at all, and read back with no code execution.

A checkpoint is a directory `step-000123/` holding the trainable weights (safetensors: the LoRA adapter, or the
full model), the optimiser and scheduler states (`torch.load(weights_only=True)`), the proposal's weights when
it is a copy of the model, and `state.json` (step, objective state, RNG). It is assembled in a hidden
directory `.writing-*`, every file and the directory flushed to disk (fsync), then renamed into place and the
rename itself flushed: a crash or a full disk mid-write leaves the previous checkpoint intact, and the
staging directory left by a kill is removed by the next save or resume.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

COMPLETE = "state.json"  # written last: a directory without it is not a checkpoint
STAGING = ".writing-"


class CheckpointError(RuntimeError):
    pass


class CorruptCheckpoint(CheckpointError):
    """A checkpoint that cannot be read back whole."""


class CheckpointWriteFailed(CheckpointError):
    """A checkpoint could not be written (e.g. the disk is full); the previous one is untouched."""


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The weights that training changes: the adapter under LoRA, else every parameter (a tied weight once, under
    its first name). Sharded weights stay sharded (`bayeslm.parallel.sharding.full` gathers them)."""
    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict

        return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    first = _first_names(model)
    return {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items() if name in first}


def _first_names(model) -> set[str]:
    """The name each parameter and buffer goes by first: a tied weight's other names are left out."""
    return {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}


def load_trainable_state(model, state: dict[str, torch.Tensor]):
    """Loads what `trainable_state` saved. The only keys allowed to be missing are tied weights (saved once
    under their first name); any other missing or unexpected key means the checkpoint is of another model."""
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, state)
        missing = []  # every base weight is "missing" from an adapter's state: only unexpected keys tell
    else:
        result = model.load_state_dict(state, strict=False)
        first = _first_names(model)
        missing = [k for k in result.missing_keys if k in first]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise CorruptCheckpoint(f"the checkpoint does not match the model: missing {missing[:5]}"
                                f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                                f"{' ...' if len(unexpected) > 5 else ''}")


def _fsync(path: Path):
    """Flushes a file, or a directory's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_staging(directory: Path):
    """Removes half-written checkpoints (`.writing-*`) left by a process killed mid-save."""
    for stale in directory.glob(STAGING + "*") if directory.is_dir() else ():
        shutil.rmtree(stale, ignore_errors=True)


def save(directory: Path, step: int, *, model: dict, optimizer: dict, scheduler: dict, state: dict,
         proposal: dict | None = None, keep: int = 2):
    """Writes checkpoint `step-{step}` whole or not at all: `model` and `proposal` are `trainable_state`s,
    `optimizer` and `scheduler` state dicts. Raises CheckpointWriteFailed on an OS error (disk full,
    permissions), after removing the partial copy."""
    final = directory / f"step-{step:06d}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        remove_staging(directory)
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=STAGING))
    except OSError as error:
        raise CheckpointWriteFailed(f"cannot write checkpoint {final}: {error}") from error
    try:
        save_file(model, staging / "model.safetensors")
        if proposal is not None:
            save_file(proposal, staging / "proposal.safetensors")
        torch.save(optimizer, staging / "optimizer.pt")
        torch.save(scheduler, staging / "scheduler.pt")
        (staging / COMPLETE).write_text(json.dumps({"step": step, **state}))
        for file in staging.iterdir():
            _fsync(file)
        _fsync(staging)
        aside = None
        if final.exists():  # this step saved before (a resumed run): set aside, never half-deleted in place
            aside = Path(tempfile.mkdtemp(dir=directory, prefix=STAGING))
            os.replace(final, aside / final.name)
        os.replace(staging, final)
        _fsync(directory)  # the rename itself reaches the disk
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)  # the previous checkpoint stays the latest
        if isinstance(error, OSError):
            previous = completed(directory)
            raise CheckpointWriteFailed(
                f"cannot write checkpoint {final}: {error}. The run stopped; the last good checkpoint is "
                f"{previous[-1] if previous else 'none'} (free space or fix the problem, then resume with "
                "--resume)") from error
        raise
    for old in completed(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _step(path: Path) -> int:
    try:
        return int(path.name.removeprefix("step-"))
    except ValueError:
        return -1


def completed(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (by step number: `step-1000000` comes after `step-999999`)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.glob("step-*") if _step(p) >= 0 and (p / COMPLETE).is_file()), key=_step)


def load(path: Path) -> dict:
    """Reads one checkpoint; raises CorruptCheckpoint naming the file that cannot be read."""
    try:
        state = json.loads((path / COMPLETE).read_text())
        out = {"state": state, "model": load_file(path / "model.safetensors"),
               "optimizer": torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
               "scheduler": torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True)}
        if (path / "proposal.safetensors").is_file():
            out["proposal"] = load_file(path / "proposal.safetensors")
        return out
    except Exception as error:  # any unreadable piece makes the whole checkpoint unusable
        raise CorruptCheckpoint(f"checkpoint {path} is unreadable ({type(error).__name__}: {error})") from error


def load_latest(directory: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that reads back whole, skipping (and reporting) corrupt ones; None when there is no
    checkpoint at all. When every one is corrupt it raises rather than let the run silently start over."""
    remove_staging(directory)
    found = completed(directory)
    for path in reversed(found):
        try:
            return path, load(path)
        except CorruptCheckpoint as error:
            print(f"bayeslm: warning: {error}; trying an older one", file=sys.stderr)
    if found:
        raise CorruptCheckpoint(f"none of the {len(found)} checkpoint(s) in {directory} reads back whole; to start "
                                "the run over, pass --overwrite instead of --resume")
    return None
