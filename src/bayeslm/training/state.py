"""What a checkpoint holds of a run, and how a run continues from it bit for bit.

A checkpoint keeps the trainable weights, AdamW's moments, the schedule, the objective's running state, the
adaptive proposal's copy, torch's random state, the config and the target's fingerprint. A run resumes only
with the config it was started with (the number of steps may grow under the constant schedule) and towards the
same target: anything else would silently continue towards another posterior.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import torch

from bayeslm.config import ConfigError, to_dict
from bayeslm.parallel import sharding
from bayeslm.training import checkpoint
from bayeslm.training.config import load_config
from bayeslm.training.run_dir import truncate_metrics

if TYPE_CHECKING:
    from bayeslm.training.loop import Trainer


def save(trainer: Trainer):
    """Rank 0 writes (every process holds the same state); a failed write stops every process."""
    if trainer.saved_step == trainer.step or trainer.run_dir is None:  # on disk already, or no run directory
        return
    state = {"config": to_dict(trainer.config), "target": trainer.target.fingerprint(),
             "objective": trainer.objective.state_dict(), "proposal_is_copy": trainer.proposal_is_copy,
             "drift": trainer.drift.state_dict(),
             "torch_rng": torch.get_rng_state().tolist()}
    # Sharded tensors are gathered whole onto rank 0's CPU (a collective): a checkpoint is the same for any number
    # of processes.
    keep = trainer.world.main
    model = sharding.full(checkpoint.trainable_state(trainer.model.model), keep=keep)
    proposal = (sharding.full(checkpoint.trainable_state(trainer.proposal.model), keep=keep)
                if trainer.proposal_is_copy else None)
    optimizer = sharding.full(trainer.optimizer.state_dict(), keep=keep)
    trainer.world.on_main(lambda: checkpoint.save(
        trainer.run_dir / "checkpoints", trainer.step, model=model, optimizer=optimizer,
        scheduler=trainer.scheduler.state_dict(), state=state, proposal=proposal,
        keep=trainer.config.keep_checkpoints))
    trainer.saved_step = trainer.step


def resume(trainer: Trainer) -> bool:
    """Continues from the newest readable checkpoint: rank 0 picks it, every process loads that one. False when
    the run has none (killed before its first checkpoint): it then starts over."""
    world, run_dir = trainer.world, trainer.run_dir
    found = world.on_main(checkpoint.load_latest, run_dir / "checkpoints")
    path = world.broadcast(found[0] if found else None)
    if path is None:
        world.on_main(truncate_metrics, run_dir / "metrics.jsonl", 0)
        if not trainer.quiet and world.main:
            print(f"bayeslm: {run_dir} holds no checkpoint yet: starting its run from the first step",
                  file=sys.stderr)
        return False
    saved = found[1] if world.main else checkpoint.load(path)
    state = saved["state"]
    _refuse_changes(trainer, state)
    live = checkpoint.trainable_state(trainer.model.model)  # each process takes its shards of sharded weights
    checkpoint.load_trainable_state(trainer.model.model, {k: sharding.like(v, live.get(k))
                                                          for k, v in saved["model"].items()})
    trainer.optimizer.load_state_dict(_local_optimizer_state(trainer.optimizer, saved["optimizer"]))
    trainer.scheduler.load_state_dict(saved["scheduler"])
    trainer.objective.load_state_dict(state["objective"])
    if "drift" in state:  # checkpoints written before the run watched its ELBO have none
        trainer.drift.load_state_dict(state["drift"])
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    if state["proposal_is_copy"]:
        trainer._copy_proposal("proposal", saved["proposal"])
    if state["step"] > trainer.config.steps:
        raise ConfigError(f"cannot resume {trainer.run_dir} for {trainer.config.steps} steps: its checkpoint is at "
                          f"step {state['step']} already. Resume with steps of at least {state['step']}, or start a "
                          "new run")
    trainer.step = trainer.saved_step = state["step"]
    world.on_main(truncate_metrics, run_dir / "metrics.jsonl", trainer.step)
    if not trainer.quiet and world.main:
        print(f"bayeslm: resumed from {path} (step {trainer.step})", file=sys.stderr)
    return True


WATCHING = ("report_to",)  # keys that change what watches the run, never what it computes


def _refuse_changes(trainer: Trainer, state: dict):
    """Refuses to resume with another config (but a longer constant schedule) or towards another target."""
    saved_config = to_dict(load_config(state["config"]))  # fields added since: their defaults
    config = trainer.config
    changed = sorted(k for k, v in to_dict(config).items()
                     if saved_config[k] != v and not (k == "steps" and config.schedule == "constant")
                     and k not in WATCHING)
    if changed:
        raise ConfigError(f"cannot resume {trainer.run_dir} with a different config: {changed} changed since the "
                          "checkpoint (only steps may change, with the constant schedule, and where the figures "
                          f"go: {', '.join(WATCHING)})")
    saved_target, target = state.get("target"), trainer.target.fingerprint()
    if saved_target is not None and saved_target != target:
        what = ", ".join(f"{k} was {saved_target.get(k)!r}, now {v!r}" for k, v in target.items()
                         if saved_target.get(k) != v)
        raise ConfigError(f"cannot resume {trainer.run_dir} towards a different target: {what}. Resume with the "
                          "target the run started with, or start a new run (another --out)")


def _local_optimizer_state(optimizer, state: dict) -> dict:
    """A whole optimiser state (as saved) with this process's shards of sharded parameters' moments."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {**state, "state": {i: {k: sharding.like(v, params[i]) if v.shape == params[i].shape else v
                                   for k, v in moments.items()} for i, moments in state["state"].items()}}
