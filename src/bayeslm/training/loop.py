"""The one training loop: every objective, full fine-tuning or LoRA, fp32 or bf16, resumable.

Each step: draw continuations (from the model itself, or from a proposal: `Objective.proposal`), score them under
the target and the prior, let the objective turn them into a loss, step AdamW, let the objective adapt, log,
checkpoint. The loop knows no objective by name (see `bayeslm.training.objectives.base`). The model stays in eval
mode (no dropout), so the log-probabilities it is trained on are exactly those it sampled with; only gradient
checkpointing puts it in training mode around the backward pass, and only for a model without dropout.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

from bayeslm import weights
from bayeslm.config import ConfigError, to_dict
from bayeslm.distributions.lm import LM
from bayeslm.distributions.loading import resolve_device
from bayeslm.measurement.diversity import distinct_n
from bayeslm.measurement.evaluation import evaluate
from bayeslm.measurement.scorecard import Scorecard, batch_figures
from bayeslm.modelling.potentials.language import masked
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.parallel import distributed, sharding
from bayeslm.progress import bar
from bayeslm.training import checkpoint, heap, model_card, state
from bayeslm.training.config import TrainConfig
from bayeslm.training.drift import Drift
from bayeslm.training.objectives import Step
from bayeslm.training.run_dir import (
    save_model,
)
from bayeslm.training.setup import models, schedule
from bayeslm.training.trackers import Trackers
from bayeslm.weights import normalise, snis_mean


class TrainingDiverged(RuntimeError):
    pass


class Interrupted(KeyboardInterrupt):
    pass


class Trainer:
    """One run's state: the model, the target (whose prior is π0), the objective, the optimiser and the step.

    `trainable(name)` may restrict which parameters train (the Python API's way to pick a model family).
    `world` is this process's place in data-parallel training (see `bayeslm.parallel.distributed`); one process by
    default."""

    def __init__(self, config: TrainConfig, run_dir: Path | None, target: Target, *, quiet: bool = False,
                 trainable=None, world: distributed.World | None = None, callbacks: list = (),
                 eval_prompts: tuple[list[str], str | None] | None = None):
        self.config, self.run_dir, self.quiet = config, run_dir, quiet
        self.callbacks = list(callbacks)  # each gets every step's figures (`trackers.Trackers`)
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
        self.world = world or distributed.World()
        torch.manual_seed(config.seed)
        # Data-parallel processes each hold their own device; one process uses the configured one.
        device = self.world.device if self.world.size > 1 else resolve_device(config.device)
        self.model, self.target = models(config, target, device)
        self.objective = copy.deepcopy(config.objective)  # its running state is this run's, not the caller's
        self.objective.bind(self.target)
        per_step = min(config.prompts_per_step, len(target.prompts)) * config.samples_per_prompt * config.grad_accum
        if self.objective.proposal == "adaptive" and not weights.can_judge(per_step) and self.world.main:
            print(f"bayeslm: warning: proposal: adaptive swaps only on a batch whose weights can be judged (at "
                  f"least {weights.FEWEST_JUDGED} samples a step; this config draws {per_step}), so the proposal "
                  "will stay the prior: raise samples_per_prompt, prompts_per_step or grad_accum", file=sys.stderr)
        if trainable is not None:
            for name, p in self.model.model.named_parameters():
                p.requires_grad_(p.requires_grad and trainable(name))
        self.params = [p for p in self.model.model.parameters() if p.requires_grad]
        self.world.broadcast_parameters(self.params)  # every process starts from rank 0's weights
        self.sharded = self._shard() if config.sharding == "full" and self.world.size > 1 else {}
        self.params = [p for p in self.model.model.parameters() if p.requires_grad]  # sharding replaced them
        groups = self.objective.parameter_groups()  # fitted with the model, clipped apart from it
        self.own_params = [p for group in groups for p in group["params"]]
        self.optimizer = torch.optim.AdamW([{"params": self.params}, *groups], lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule(config))
        self.proposal = self.target.prior  # off-policy objectives sample from here (see Objective.proposal)
        if self.objective.mask:  # a target without a language fails here, not at the first step
            try:
                masked(self.target, self.proposal)
            except ValueError as error:
                raise ConfigError(f"objective.{self.objective.name}.mask: {error}") from None
        self.proposal_is_copy = False
        self.step = 0
        self.stop_requested = False  # set by SIGINT/SIGTERM: the loop stops between steps, never inside one
        self.done_early = False  # set by a callback: training ends after this step as if it were the last
        self.saved_step = None  # the step of the newest checkpoint on disk
        self.history: list[dict] = []  # every step's figures (what metrics.jsonl holds)
        self.drift = Drift()  # says when the run leaves π* behind

    def _shard(self) -> dict[str, sharding.Sharded]:
        """Shards π_θ and, under full fine-tuning, the prior (`bayeslm.parallel.sharding`)."""
        if self.config.grad_accum % self.world.size:
            raise ConfigError(f"sharding: full needs every process to run the same passes: make grad_accum (now "
                              f"{self.config.grad_accum}) a multiple of the {self.world.size} processes")
        if self.config.decoding == "compiled":  # a captured graph would not follow weights gathered anew each step
            raise ConfigError("decoding: compiled is not supported with sharding: full; use decoding: eager")
        shards = {"model": sharding.Sharded.of(self.model.model)}
        if self.target.prior.model is not self.model.model:  # under LoRA the prior is the same sharded weights
            shards["prior"] = sharding.Sharded.of(self.target.prior.model)
        return shards

    def _gathered(self):
        """Every sharded model whole while sampling and scoring without gradient (`sharding.gathered`)."""
        return sharding.gathered([shard.net for shard in self.sharded.values()])

    def _plain(self, name: str, *, keep: bool = True):
        """A whole copy of sharded model `name`, on the run's device (a collective; None where not kept)."""
        net = self.sharded[name].plain(keep=keep)
        return net.to(self.model.device) if net is not None else None

    # ----- samples ---------------------------------------------------------------------------------------------

    def _prompts(self, draw: int) -> list[str]:
        """Prompts for the draw-th micro-batch: consecutive slices of one seeded permutation, cycling."""
        prompts = self.target.prompts
        count = min(self.config.prompts_per_step, len(prompts))
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(self.config.seed)).tolist()
        return [prompts[order[(draw * count + i) % len(prompts)]] for i in range(count)]

    def _sampler(self) -> LM:
        sampler = self.model if self.objective.proposal == "model" else self.proposal
        return masked(self.target, sampler) if self.objective.mask else sampler

    def _batch(self, unit: distributed.Unit) -> ScoredSamples:
        """This process's piece of micro-batch `unit.draw` (all of it, with one process), sampled and scored, on
        the model's device (the objectives combine it with the model's own outputs)."""
        sampler = self._sampler()
        samples = sampler.sample(self._prompts(unit.draw)[unit.start:unit.stop], self.config.samples_per_prompt,
                                 self.target.max_new_tokens, seed=unit.seed)
        # An objective that runs the prior in its loss fills log π0 in from there.
        scored = self.target.score_samples(samples, sampler, keep_tokens=True,
                                           score_prior=not self.objective.scores_prior)
        return scored.to(self.model.device)

    # ----- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> dict:
        config, world = self.config, self.world
        progress = bar(config.steps, "train", unit="step", initial=self.step, leave=True,
                       hidden=self.quiet or not world.main)
        sinks = world.on_main(Trackers, config.report_to, self.run_dir, to_dict(config), self.callbacks)
        try:
            while self.step < config.steps and not self._stopping() and not self.done_early:
                record = self.train_step()
                if (warning := self.drift.observe(record)) is not None:
                    record["leaving_target"] = True
                    if world.main:
                        print(f"bayeslm: warning: {warning}", file=sys.stderr)
                self.done_early = world.any(bool(world.on_main(self._log, record, sinks)))
                progress.update(1)
                progress.set_postfix(reward=f"{record['reward_mean']:.3f}", kl=f"{record['kl_model_prior']:.3f}")
                if self.step % config.checkpoint_every == 0 or self.step == config.steps or self.done_early:
                    self.save_checkpoint()
        finally:
            progress.close()
            if sinks is not None:
                sinks.close()
        if self._stopping():
            if self.run_dir is None:
                raise Interrupted(f"stopped after step {self.step}; nothing was kept (no run directory)")
            self.save_checkpoint()
            raise Interrupted(f"stopped after step {self.step}; a checkpoint was written. Resume with the same "
                              "command and --resume")
        return self.finish()

    def _stopping(self) -> bool:
        """Whether a stop was asked for (SIGINT/SIGTERM), on any process: all stop after the same step."""
        self.stop_requested = self.world.any(self.stop_requested)
        return self.stop_requested

    def _log(self, record: dict, sinks: Trackers) -> bool:
        """Keeps the step's figures (history, metrics.jsonl, trackers, callbacks); True when a callback asked to
        end training."""
        self.history.append(record)
        if self.run_dir is not None:
            with (self.run_dir / "metrics.jsonl").open("a") as f:  # JSON has no infinity: an infinite KL is null
                f.write(json.dumps({k: v if not isinstance(v, float) or math.isfinite(v) else None
                                    for k, v in record.items()}) + "\n")
        return sinks.log(record)

    def train_step(self) -> dict:
        """One optimiser step (sampling, scoring, objective, update); returns its metrics record, of the global
        batch when data-parallel.

        The loss is the mean over micro-batches of each one's mean loss. A process holding only part of a
        micro-batch weighs its loss by its share of the rows (`unit.fraction`); summing the gradients over
        processes then gives exactly the gradient of one process holding the whole batch."""
        config, world, started = self.config, self.world, time.perf_counter()
        count = min(config.prompts_per_step, len(self.target.prompts))
        with self._gathered():
            mine = {u.key: (u, self._batch(u))
                    for u in world.units(self.step, config.grad_accum, count, config.seed)}
        sampled = time.perf_counter()
        # Every piece of the global batch, in the single-process order: what the figures and log Z are made of.
        pieces = sorted(world.gather([(key, batch.to("cpu")) for key, (_, batch) in mine.items()]),
                        key=lambda piece: piece[0])
        # Each epoch is one optimiser step on the same batch (Objective.epochs); the figures are of the first epoch
        # (the model that sampled), loss and grad_norm the last epoch's.
        epochs = self.objective.epochs
        for epoch in range(epochs):
            outputs, local = {}, 0.0
            for key, piece in pieces:
                if key in mine:
                    unit, batch = mine[key]
                    out = self._loss(batch, unit.fraction / config.grad_accum)
                    local += unit.fraction * out.loss.item()
                    outputs[key] = out
                else:  # another process's piece: running estimates see it as that process's loss does
                    self.objective.observe(piece)
            loss, norm = self._update(local, epoch, epochs)
            if epoch == 0:
                first = outputs
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.step += 1
        produced = dict(world.gather([(key, _detached(out)) for key, out in first.items()]))
        record = self._figures([piece for _, piece in pieces], [produced[key] for key, _ in pieces])
        record.update(self.objective.after_step(record))
        if self.objective.proposal == "adaptive":
            record["proposal_swap"] = self._maybe_replace_proposal([piece for _, piece in pieces], mine, record)
        world.check_same("objective state", self.objective.state_dict())
        elapsed = time.perf_counter() - started
        samples = sum(len(piece) for _, piece in pieces)
        tokens = sum(sum(map(len, piece.continuations)) for _, piece in pieces)
        record.update(step=self.step, loss=loss, grad_norm=norm.item(), lr=lr, samples_per_s=samples / elapsed,
                      tokens_per_s=tokens / elapsed, sample_seconds=sampled - started, step_seconds=elapsed)
        return record

    def _update(self, local: float, epoch: int, epochs: int) -> tuple[float, torch.Tensor]:
        """Sums the gradients over processes, clips them and takes the optimiser step; refuses a step whose loss or
        gradient is not finite, or that makes a weight so. Returns the step's loss and gradient norm."""
        config, world = self.config, self.world
        world.sum_gradients(self.params + self.own_params)
        clip = sharding.clip_grad_norm_ if self.sharded else torch.nn.utils.clip_grad_norm_
        norm = clip(self.params, config.max_grad_norm or float("inf"))
        loss = world.sum(local) / config.grad_accum
        where = f" (epoch {epoch + 1} of {epochs}: the step's earlier epochs go with it)" if epoch else ""
        if not (math.isfinite(loss) and math.isfinite(norm.item())):
            self.optimizer.zero_grad(set_to_none=True)
            raise self._diverged(f"the loss ({loss}) or gradient norm ({norm.item()}) is not finite; this update "
                                 f"was not applied{where}")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # A finite gradient can still take a weight to inf or NaN (a huge learning rate): never saved nor sampled.
        if world.any(not all(bool(torch.isfinite(p).all()) for p in self.params + self.own_params)):
            raise self._diverged(f"the update at learning rate {config.lr:g} made some weights NaN or infinite"
                                 f"{where}; nothing of this step is saved")
        return loss, norm

    def _diverged(self, what: str) -> TrainingDiverged:
        last = checkpoint.completed(self.run_dir / "checkpoints") if self.run_dir else []
        return TrainingDiverged(f"step {self.step + 1}: {what}. The last good checkpoint is "
                                f"{last[-1] if last else 'none (no step completed)'}; no model was saved. Lower the "
                                "learning rate (lr), enable max_grad_norm, or check the reward's scale")

    def _loss(self, batch: ScoredSamples, weight: float) -> Step:
        """The objective's loss on `batch`, back-propagated times `weight`, taking whole prompt groups of at most
        backward_batch_size rows at a time: only one slice's activations are held for the backward pass. Each loss
        is a mean over rows within prompt groups, so the slices' losses weighted by their share of the rows give
        the whole batch's loss and gradient."""
        rows = self.config.backward_batch_size or (8 if self.model.device.type == "cpu" else self.config.batch_size)
        size = max(batch.group, rows // batch.group * batch.group)
        steps = []
        net = self.model.model
        if self.config.gradient_checkpointing:
            net.train()  # only then does transformers recompute layers; no dropout is active (_recompute_layers)
        try:
            for start in range(0, len(batch), size):
                part = batch.rows(start, start + size)
                step = self.objective.loss(self.model, self.target.prior, part)
                (step.loss * weight * len(part) / len(batch)).backward()
                heap.release(self.model.device)  # else the next slice's blocks fragment the heap further
                steps.append((len(part) / len(batch), step))
        finally:
            net.eval()
        return Step(sum(share * step.loss.detach() for share, step in steps),
                    torch.cat([step.log_model for _, step in steps]), _cat([step.kl_prior for _, step in steps]),
                    _cat([step.log_prior for _, step in steps]))

    def _figures(self, pieces: list[ScoredSamples], outputs: list[Step]) -> dict:
        """The step's figures of the model from the global batch (`batch_figures`), with the exact KL to the prior
        where the objective computed it."""
        log_prior = torch.cat([o.log_prior if o.log_prior is not None else p.log_prior
                               for p, o in zip(pieces, outputs)])
        group = pieces[0].group
        record = batch_figures(torch.cat([p.log_proposal for p in pieces]), torch.cat([o.log_model for o in outputs]),
                               log_prior + torch.cat([p.log_phi for p in pieces]), log_prior,
                               torch.cat([p.reward for p in pieces]), group)
        if all(o.kl_prior is not None for o in outputs):
            record["kl_model_prior"] = torch.cat([o.kl_prior for o in outputs]).mean().item()  # exact per token
        texts = [t for p in pieces for t in p.texts]
        record["distinct_2"] = sum(distinct_n(texts[i:i + group], 2) for i in range(0, len(texts), group)) / (
            len(texts) // group)
        return record

    def _maybe_replace_proposal(self, pieces: list[ScoredSamples], mine: dict, record: dict) -> str:
        """GDC's KL-adaptive proposal: q ← π_θ when KL(π*‖π_θ) < KL(π*‖q), i.e. E_π*[log π_θ − log q] > 0.

        The updated model is scored on this step's samples; the gain is a self-normalised estimate per prompt,
        averaged, and must exceed its standard error so that noise alone never swaps the proposal. Nor does an
        estimate whose weights have too heavy a tail to be trusted (the batch's Pareto k̂ past its threshold,
        `batch_figures`): its standard error would not see the noise. Every process decides on the same
        gathered global batch, so all make the same decision. Returns what was decided: "swapped", "kept" or
        "unreliable"."""
        if record["unreliable"]:
            return "unreliable"
        group = pieces[0].group
        with torch.no_grad(), self._gathered():
            scored = {key: self.model.log_prob(b.sample_prompts, b.continuations).cpu() for key, (_, b) in mine.items()}
        scored = dict(self.world.gather(list(scored.items())))
        log_model = torch.cat([scored[key] for key in sorted(scored)]).double()
        log_q = torch.cat([p.log_proposal for p in pieces])
        log_w = torch.cat([p.log_w for p in pieces]).reshape(-1, group)
        gain, influence = snis_mean((log_model - log_q).reshape(-1, group), normalise(log_w)[1])
        stderr = (influence.var(1) / group).sum().sqrt() / len(gain)
        if gain.mean() > stderr:
            self._copy_proposal(f"proposal@{self.step}")
            return "swapped"
        return "kept"

    def _copy_proposal(self, name: str, state: dict | None = None):
        """The proposal becomes a frozen copy of π_θ (with `state`'s weights, on resume); sharded like it."""
        frozen = self._plain("model") if self.sharded else copy.deepcopy(self.model.model)
        frozen.requires_grad_(False)
        if state is not None:
            checkpoint.load_trainable_state(frozen, state)
        if self.sharded:
            self.sharded["proposal"] = sharding.Sharded.of(frozen)
        self.proposal = self.model.view(model=frozen, name=name, autocast=self.model.autocast)
        self.proposal_is_copy = True

    # ----- checkpoints and the end -------------------------------------------------------------------------------

    def save_checkpoint(self):
        """Writes this step's checkpoint (`bayeslm.training.state`)."""
        state.save(self)

    def resume(self) -> bool:
        """Continues from the newest readable checkpoint (`bayeslm.training.state`); False when there is none."""
        return state.resume(self)

    def finish(self) -> Scorecard | None:
        """The model saved as a plain HF model (first: a failed evaluation keeps it), then the final scorecards of
        the model and the prior (against the original target) with samples of each and of the target. Rank 0 saves
        (sharded weights gathered whole onto its CPU first) and writes the scorecards; every process samples and
        scores its share of the evaluation (on gathered weights when sharded)."""
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
        return card


def _detached(out: Step) -> Step:
    """A step's per-sample outputs on the CPU, without the loss (what the figures need of it)."""
    return Step(None, *(None if x is None else x.cpu() for x in (out.log_model, out.kl_prior, out.log_prior)))


def _cat(parts: list) -> torch.Tensor | None:
    """The parts concatenated, or None when an objective did not compute them."""
    return None if any(part is None for part in parts) else torch.cat(parts)
