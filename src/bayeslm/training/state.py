"""What a checkpoint holds of a run, and the rules for continuing from it bit for bit.

A checkpoint keeps the value `Trainer.state_dict()` makes: the trainable weights, AdamW's moments, the schedule,
the adaptive proposal's copy, and `state` (the step, the objective's running state, torch's random state, the
config and the target's fingerprint). This module writes and reads that value (`bayeslm.training.checkpoint` does
the files) and knows no trainer. A run resumes only with the config it was started with (the number of steps may
grow under the constant schedule) and towards the same target: anything else would silently continue towards
another posterior.
"""

from __future__ import annotations

from pathlib import Path

from bayeslm.config import ConfigError, to_dict
from bayeslm.parallel import distributed, sharding
from bayeslm.training import checkpoint
from bayeslm.training.config import TrainConfig, load_config


def write(run_dir: Path, saved: dict, keep: int):
    """Writes a `state_dict()` value as the checkpoint of its step (rank 0 only)."""
    checkpoint.save(run_dir / "checkpoints", saved["state"]["step"], model=saved["model"],
                    optimizer=saved["optimizer"], scheduler=saved["scheduler"], state=saved["state"],
                    proposal=saved["proposal"], keep=keep)


def latest(run_dir: Path, world: distributed.World) -> tuple[Path, dict] | None:
    """The newest readable checkpoint of `run_dir` as a `state_dict()` value, the same on every process (rank 0
    picks it, every process reads it); None when the run has none."""
    found = world.on_main(checkpoint.load_latest, run_dir / "checkpoints")
    path = world.broadcast(found[0] if found else None)
    if path is None:
        return None
    saved = found[1] if world.main else checkpoint.load(path)
    return path, {"proposal": None, **saved}


WATCHING = ("report_to",)  # keys that change what watches the run, never what it computes


def refuse_changes(state: dict, config: TrainConfig, target: dict, run_dir: Path | None):
    """Refuses to continue a checkpoint's `state` with another config (but a longer constant schedule), towards a
    target of another fingerprint, or for fewer steps than it has done."""
    saved_config = to_dict(load_config(state["config"]))  # fields added since: their defaults
    changed = sorted(k for k, v in to_dict(config).items()
                     if saved_config[k] != v and not (k == "steps" and config.schedule == "constant")
                     and k not in WATCHING)
    if changed:
        raise ConfigError(f"cannot resume {run_dir} with a different config: {changed} changed since the "
                          "checkpoint (only steps may change, with the constant schedule, and where the figures "
                          f"go: {', '.join(WATCHING)})")
    saved_target = state.get("target")
    if saved_target is not None and saved_target != target:
        what = ", ".join(f"{k} was {saved_target.get(k)!r}, now {v!r}" for k, v in target.items()
                         if saved_target.get(k) != v)
        raise ConfigError(f"cannot resume {run_dir} towards a different target: {what}. Resume with the "
                          "target the run started with, or start a new run (another --out)")
    if state["step"] > config.steps:
        raise ConfigError(f"cannot resume {run_dir} for {config.steps} steps: its checkpoint is at step "
                          f"{state['step']} already. Resume with steps of at least {state['step']}, or start a "
                          "new run")


def local_optimizer_state(optimizer, state: dict) -> dict:
    """A whole optimiser state (as saved) with this process's shards of sharded parameters' moments."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {**state, "state": {i: {k: sharding.like(v, params[i]) if v.shape == params[i].shape else v
                                   for k, v in moments.items()} for i, moments in state["state"].items()}}
