"""Checkpoints that survive interruption: written whole or not at all, and read back with no code execution.

A checkpoint is a directory `step-000123/` holding the trainable weights (safetensors: the LoRA adapter, or the
full model), the optimiser and scheduler states (`torch.load(weights_only=True)`), the proposal's weights when
it is a copy of the model, and `state.json` (step, objective state, RNG). It is assembled in a hidden
directory and renamed into place, so a crash mid-write leaves the previous checkpoint intact.
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


class CorruptCheckpoint(RuntimeError):
    pass


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The weights that training changes: the adapter under LoRA, else every parameter (ties deduplicated)."""
    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict

        return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    seen, state = set(), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            state[name] = tensor.detach().contiguous()
    return state


def load_trainable_state(model, state: dict[str, torch.Tensor]):
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state)
    else:
        model.load_state_dict(state, strict=False)


def save(directory: Path, step: int, *, model, optimizer, scheduler, state: dict, proposal=None, keep: int = 2):
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".writing-"))
    try:
        save_file(trainable_state(model), staging / "model.safetensors")
        if proposal is not None:
            save_file(trainable_state(proposal), staging / "proposal.safetensors")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        (staging / COMPLETE).write_text(json.dumps({"step": step, **state}))
        final = directory / f"step-{step:06d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the previous checkpoint stays the latest
        raise
    for old in completed(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def completed(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("step-*") if (p / COMPLETE).is_file())


def load(path: Path) -> dict:
    """Reads one checkpoint; raises CorruptCheckpoint naming the file that cannot be read."""
    try:
        state = json.loads((path / COMPLETE).read_text())
        out = {"state": state, "model": load_file(path / "model.safetensors"),
               "optimizer": torch.load(path / "optimizer.pt", weights_only=True),
               "scheduler": torch.load(path / "scheduler.pt", weights_only=True)}
        if (path / "proposal.safetensors").is_file():
            out["proposal"] = load_file(path / "proposal.safetensors")
        return out
    except Exception as error:  # any unreadable piece makes the whole checkpoint unusable
        raise CorruptCheckpoint(f"checkpoint {path} is unreadable ({type(error).__name__}: {error})") from error


def load_latest(directory: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that reads back whole, skipping (and reporting) corrupt ones."""
    for path in reversed(completed(directory)):
        try:
            return path, load(path)
        except CorruptCheckpoint as error:
            print(f"bayeslm: warning: {error}; trying an older one", file=sys.stderr)
    return None
