"""The one training loop: `Trainer`, a run of optimiser steps (`bayeslm.training.stepper`) with what a run keeps of
them: every step's figures (history, metrics.jsonl, trackers, callbacks), the drift warning, checkpoints it
resumes from bit for bit (`state_dict`, written by `bayeslm.training.state`), and at the end the saved model and
its scorecard against the target (`Run`). `bl.train` is its loop, run to the config's last step.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bayeslm.config import ConfigError, to_dict
from bayeslm.distributions.lm import LM
from bayeslm.measurement.evaluation import evaluate
from bayeslm.measurement.scorecard import Scorecard
from bayeslm.modelling.target import Target
from bayeslm.parallel import distributed, sharding
from bayeslm.progress import bar
from bayeslm.training import checkpoint, model_card
from bayeslm.training import state as run_state
from bayeslm.training.config import LoRA, TrainConfig, settings_config
from bayeslm.training.drift import Drift
from bayeslm.training.objectives import Objective
from bayeslm.training.run_dir import save_model, truncate_metrics
from bayeslm.training.setup import eval_prompts
from bayeslm.training.stepper import Stepper
from bayeslm.training.trackers import Trackers, check_callbacks, require_directory


class Interrupted(KeyboardInterrupt):
    pass


@dataclass
class Run:
    """What a training run leaves: the trained model π_θ, its final scorecard against the target (None with
    eval_n: 0), its directory (None when nothing was written), every step's figures, the config, the trained
    objective with its state (e.g. trajectory balance's learned log Z) and the target (whose prior is π0)."""

    model: LM
    scorecard: Scorecard | None
    directory: Path | None
    metrics: list[dict] = field(repr=False)
    config: TrainConfig = field(repr=False)
    objective: Objective | None = field(default=None, repr=False)
    target: Target | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        where = f" in {self.directory}" if self.directory else ""
        return f"Run({len(self.metrics)} steps{where}, scorecard={'yes' if self.scorecard else 'none'})"


class Trainer(Stepper):
    """A training run: the model π_θ (`model`), the target (whose prior is π0), the objective, its steps and figures.

        trainer = bl.Trainer(target, "klrl", lr=1e-4, lora=bl.LoRA(r=8))
        for _ in range(100):
            record = trainer.step()      # one optimiser step's figures
        run = trainer.finish()           # the model and its scorecard against the target

    `settings` are the training config's keys (docs/config.md); nothing is written (`bl.train(..., out=DIR)` writes
    a resumable run). Each of `callbacks`, `f(record, trainer)`, gets every step's figures and may return True to
    end training after that step (`done_early`). `trainable(name)` may restrict which parameters train."""

    def __init__(self, target: Target, objective: Objective | str | dict = "klrl", *, lora: LoRA | None = None,
                 quiet: bool = False, callbacks: list = (), trainable=None, **settings):
        config = settings_config(objective, lora, settings)
        self._start(config, target, quiet=quiet, callbacks=callbacks, trainable=trainable,
                    eval_prompts=eval_prompts(config, Path(".")))

    @classmethod
    def from_config(cls, config: TrainConfig, target: Target, *, run_dir: Path | None = None, quiet: bool = False,
                    trainable=None, world: distributed.World | None = None, callbacks: list = (),
                    eval_prompts: tuple[list[str], str | None] | None = None) -> Trainer:
        """A trainer for a whole `TrainConfig`, writing into `run_dir` (see `bayeslm.training.run`). `world` is this
        process's place in data-parallel training (`bayeslm.parallel.distributed`); one process by default."""
        trainer = cls.__new__(cls)
        trainer._start(config, target, run_dir=run_dir, quiet=quiet, trainable=trainable, world=world,
                       callbacks=callbacks, eval_prompts=eval_prompts)
        return trainer

    def _start(self, config: TrainConfig, target: Target, *, run_dir: Path | None = None, quiet: bool = False,
               trainable=None, world: distributed.World | None = None, callbacks: list = (),
               eval_prompts: tuple[list[str], str | None] | None = None):
        self.quiet, self.callbacks = quiet, list(callbacks or ())
        check_callbacks(self.callbacks)
        require_directory(config.report_to, run_dir)
        self.eval_prompts = None  # the final scorecard's prompts, when not the target's
        if eval_prompts is not None:  # a held-out prompt that cannot fit fails now, not after training
            self.eval_prompts, system = eval_prompts
            if system is not None and system != target.prior.system:
                raise ConfigError(f"eval_prompts: their system message {system!r} is not the target's "
                                  f"({target.prior.system!r}); a held-out set must be formatted as the target is")
            try:
                target.prior.check_fits(self.eval_prompts, target.max_new_tokens)
            except ValueError as error:
                raise ConfigError(f"eval_prompts: {error}") from None
        self._setup(config, target, run_dir, trainable, world)
        self.stop_requested = False  # set by SIGINT/SIGTERM: the loop stops between steps, never inside one
        self.done_early = False  # set by a callback: training ends after this step as if it were the last
        self.saved_step = None  # the step of the newest checkpoint on disk
        self.history: list[dict] = []  # every step's figures (what metrics.jsonl holds)
        self.drift = Drift()  # says when the run leaves π* behind
        self.trackers: Trackers | None = None  # opened at the first step, once the run directory is ready
        self.finished = False

    # ----- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> Run:
        """Steps until the config's last step (or a callback's or a signal's stop), then `finish`."""
        progress = bar(self.config.steps, "train", unit="step", initial=self.steps_done, leave=True,
                       hidden=self.quiet or not self.world.main)
        try:
            self.world.on_main(self._trackers)  # a tracker that cannot open fails before the first step
            while self.steps_done < self.config.steps and not self._stopping() and not self.done_early:
                record = self.step()
                progress.update(1)
                progress.set_postfix(reward=f"{record['reward_mean']:.3f}", kl=f"{record['kl_model_prior']:.3f}")
        finally:
            progress.close()
            self.close()
        if self._stopping():
            if self.run_dir is None:
                raise Interrupted(f"stopped after step {self.steps_done}; nothing was kept (no run directory)")
            self.save_checkpoint()
            raise Interrupted(f"stopped after step {self.steps_done}; a checkpoint was written. Resume with the same "
                              "command and --resume")
        return self.finish()

    def step(self) -> dict:
        """One optimiser step (`_optimise`), then what a run keeps of it: the drift warning, the step's figures
        (history, metrics.jsonl, trackers, callbacks, which may end training: `done_early`) and, when due, a
        checkpoint. Returns the step's figures."""
        if self.finished:
            raise RuntimeError("this Trainer has finished: its model is the Run's; start another Trainer to train on")
        world = self.world
        record = self._optimise()
        if (warning := self.drift.observe(record)) is not None:
            record["leaving_target"] = True
            if world.main:
                print(f"bayeslm: warning: {warning}", file=sys.stderr)
        self.done_early = world.any(bool(world.on_main(self._log, record)))
        every = self.config.checkpoint_every
        if self.steps_done % every == 0 or self.steps_done == self.config.steps or self.done_early:
            self.save_checkpoint()
        return record

    def _stopping(self) -> bool:
        """Whether a stop was asked for (SIGINT/SIGTERM), on any process: all stop after the same step."""
        self.stop_requested = self.world.any(self.stop_requested)
        return self.stop_requested

    def _log(self, record: dict) -> bool:
        """Keeps the step's figures (history, metrics.jsonl, trackers, callbacks); True when a callback asked to
        end training."""
        self.history.append(record)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with (self.run_dir / "metrics.jsonl").open("a") as f:  # JSON has no infinity: an infinite KL is null
                f.write(json.dumps({k: v if not isinstance(v, float) or math.isfinite(v) else None
                                    for k, v in record.items()}) + "\n")
        return self._trackers().log(record, self)

    def _trackers(self) -> Trackers:
        """The run's trackers and callbacks (rank 0's), opened on first use: by then the run directory is ready."""
        if self.trackers is None:
            self.trackers = Trackers(self.config.report_to, self.run_dir, to_dict(self.config), self.callbacks)
        return self.trackers

    def close(self):
        """Closes the run's trackers (tensorboard, wandb); `finish` does."""
        if self.trackers is not None:
            self.trackers.close()
            self.trackers = None

    # ----- checkpoints and the end -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the run (`bayeslm.training.state` writes and reads it): the trainable weights,
        the adaptive proposal's copy (or None), AdamW's and the schedule's states, and `state`: the step, config,
        the target's fingerprint, the objective's running state, the drift watch and torch's RNG. As torch's own
        `state_dict`, its tensors are the live ones: `copy.deepcopy` it to keep a snapshot in memory. A collective
        when sharded: sharded tensors come whole onto rank 0's CPU (None elsewhere)."""
        keep, proposal = self.world.main, self.objective.sampling.copy
        state = {"step": self.steps_done, "config": to_dict(self.config), "target": self.target.fingerprint(),
                 "objective": self.objective.state_dict(), "proposal_is_copy": proposal is not None,
                 "drift": self.drift.state_dict(), "torch_rng": torch.get_rng_state().tolist()}
        return {"state": state, "model": sharding.full(checkpoint.trainable_state(self.model.model), keep=keep),
                "proposal": (sharding.full(checkpoint.trainable_state(proposal.model), keep=keep)
                             if proposal is not None else None),
                "optimizer": sharding.full(self.optimizer.state_dict(), keep=keep),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, saved: dict):
        """Continues from a `state_dict()` (as a checkpoint reads back): refuses another config, a target of
        another fingerprint, or fewer steps than the checkpoint has done. Each process takes its shards."""
        state = saved["state"]
        run_state.refuse_changes(state, self.config, self.target.fingerprint(), self.run_dir)
        live = checkpoint.trainable_state(self.model.model)
        checkpoint.load_trainable_state(self.model.model, {k: sharding.like(v, live.get(k))
                                                           for k, v in saved["model"].items()})
        self.optimizer.load_state_dict(run_state.local_optimizer_state(self.optimizer, saved["optimizer"]))
        self.scheduler.load_state_dict(saved["scheduler"])
        self.objective.load_state_dict(state["objective"])
        if "drift" in state:  # checkpoints written before the run watched its ELBO have none
            self.drift.load_state_dict(state["drift"])
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        self.objective.sampling.copy = (self._frozen_copy("proposal", saved["proposal"])
                                        if state["proposal_is_copy"] else None)
        self.steps_done = state["step"]

    def save_checkpoint(self):
        """Writes this step's checkpoint (rank 0; every process holds the same state) unless it is on disk
        already or the run has no directory; a failed write stops every process."""
        if self.saved_step == self.steps_done or self.run_dir is None:
            return
        saved = self.state_dict()
        self.world.on_main(run_state.write, self.run_dir, saved, self.config.keep_checkpoints)
        self.saved_step = self.steps_done

    def resume(self) -> bool:
        """Continues from the newest readable checkpoint: rank 0 picks it, every process loads that one. False when
        the run has none (killed before its first checkpoint): it then starts over."""
        world, run_dir = self.world, self.run_dir
        found = run_state.latest(run_dir, world)
        if found is None:
            world.on_main(truncate_metrics, run_dir / "metrics.jsonl", 0)
            if not self.quiet and world.main:
                print(f"bayeslm: {run_dir} holds no checkpoint yet: starting its run from the first step",
                      file=sys.stderr)
            return False
        path, saved = found
        self.load_state_dict(saved)
        self.saved_step = self.steps_done  # on disk already
        world.on_main(truncate_metrics, run_dir / "metrics.jsonl", self.steps_done)
        if not self.quiet and world.main:
            print(f"bayeslm: resumed from {path} (step {self.steps_done})", file=sys.stderr)
        return True

    def finish(self) -> Run:
        """The model saved as a plain HF model (first: a failed evaluation keeps it), then the final scorecards of
        the model and the prior (against the original target) with samples of each and of the target. Rank 0 saves
        (sharded weights gathered whole onto its CPU first) and writes the scorecards; every process samples and
        scores its share of the evaluation (on gathered weights when sharded)."""
        self.close()
        self.finished = True
        self.objective.sampling.copy = None  # the adaptive proposal's copy of the model is of no use now
        model = self.model
        if self.sharded:
            net = self.sharded["model"].plain(keep=self.world.main)
            model = model.view(model=net) if net is not None else None
        saved = []
        if self.run_dir is not None:
            saved = self.world.on_main(lambda: save_model(model, self.run_dir / "model",
                                                          merge_lora=self.config.merge_lora,
                                                          base=self.target.prior.source))
        card = None
        if self.config.eval_n:
            with self._gathered():
                held_out = self.target if self.eval_prompts is None else self.target.given(self.eval_prompts)
                card = evaluate(self.model, held_out, self.config.eval_n, seed=self.config.seed + 1,
                                reference_n=self.config.reference_n,
                                run_dir=self.run_dir, world=self.world)
        for directory in saved or []:  # after the scorecards, which the card shows
            model_card.write(self.run_dir, directory, self.config, self.target.prior.source,
                             adapter=(directory / "adapter_config.json").is_file())
        return Run(self.model, card, self.run_dir, self.history, self.config, self.objective, self.target)
