"""One optimiser step of π_θ towards the target: every objective, full fine-tuning or LoRA, fp32 or bf16, one
process or data-parallel.

Each step: draw continuations (from the model itself or a proposal: `Objective.sampler`), score them under the
target and the prior, let the objective turn them into a loss, step AdamW, let the objective adapt (its adaptive
proposal included: `bayeslm.training.proposal`). The step knows no objective by name (see
`bayeslm.training.objectives.base`). The model stays in eval mode (no dropout), so the log-probabilities it is
trained on are exactly those it sampled with; only gradient checkpointing puts it in training mode around the
backward pass, and only for a model without dropout. The run around the steps is `bayeslm.training.loop`.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

import torch

from bayeslm import weights
from bayeslm.config import ConfigError
from bayeslm.distributions.lm import LM
from bayeslm.distributions.loading import resolve_device
from bayeslm.measurement.diversity import distinct_n
from bayeslm.measurement.scorecard import batch_figures
from bayeslm.modelling.potentials.language import masked
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.parallel import distributed, sharding
from bayeslm.training import checkpoint, heap
from bayeslm.training.config import TrainConfig
from bayeslm.training.objectives import Step
from bayeslm.training.setup import models, schedule


class TrainingDiverged(RuntimeError):
    pass


class Stepper:
    """The model, the target (whose prior is π0), the objective, the optimiser and the steps done; `_optimise` takes
    one step. `trainable(name)` may restrict which parameters train; `world` is this process's place in
    data-parallel training (`bayeslm.parallel.distributed`)."""

    def _setup(self, config: TrainConfig, target: Target, run_dir: Path | None, trainable,
               world: distributed.World | None):
        self.config, self.run_dir = config, run_dir
        self.world = world or distributed.World()
        torch.manual_seed(config.seed)
        # Data-parallel processes each hold their own device; one process uses the configured one.
        device = self.world.device if self.world.size > 1 else resolve_device(config.device)
        self.model, self.target = models(config, target, device)
        self.objective = copy.deepcopy(config.objective)  # its running state is this run's, not the caller's
        self.objective.bind(self.target)
        per_step = min(config.prompts_per_step, len(target.prompts)) * config.samples_per_prompt * config.grad_accum
        if self.objective.sampling.adaptive and not weights.can_judge(per_step) and self.world.main:
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
        if self.objective.mask:  # a target without a language fails here, not at the first step
            try:
                masked(self.target, self.target.prior)
            except ValueError as error:
                raise ConfigError(f"objective.{self.objective.name}.mask: {error}") from None
        self.steps_done = 0

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
        sampler = self.objective.sampler(self.model, self.target.prior)
        return masked(self.target, sampler) if self.objective.mask else sampler

    def draw(self, unit: distributed.Unit) -> ScoredSamples:
        """This process's piece of micro-batch `unit.draw` (all of it, with one process), sampled and scored, on
        the model's device (the objectives combine it with the model's own outputs)."""
        sampler = self._sampler()
        samples = sampler.sample(self._prompts(unit.draw)[unit.start:unit.stop], self.config.samples_per_prompt,
                                 self.target.max_new_tokens, seed=unit.seed)
        # An objective that runs the prior in its loss fills log π0 in from there.
        scored = self.target.score_samples(samples, sampler, keep_tokens=True,
                                           score_prior=not self.objective.scores_prior)
        return scored.to(self.model.device)

    # ----- the step ----------------------------------------------------------------------------------------------

    def _optimise(self) -> dict:
        """One optimiser step (sampling, scoring, objective, update); returns its metrics record, of the global
        batch when data-parallel.

        The loss is the mean over micro-batches of each one's mean loss. A process holding only part of a
        micro-batch weighs its loss by its share of the rows (`unit.fraction`); summing the gradients over
        processes then gives exactly the gradient of one process holding the whole batch."""
        config, world, started = self.config, self.world, time.perf_counter()
        count = min(config.prompts_per_step, len(self.target.prompts))
        with self._gathered():
            mine = {u.key: (u, self.draw(u))
                    for u in world.units(self.steps_done, config.grad_accum, count, config.seed)}
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
                    out = self.backward(batch, unit.fraction / config.grad_accum)
                    local += unit.fraction * out.loss.item()
                    outputs[key] = out
                else:  # another process's piece: running estimates see it as that process's loss does
                    self.objective.observe(piece)
            loss, norm = self._update(local, epoch, epochs)
            if epoch == 0:
                first = outputs
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.steps_done += 1
        produced = dict(world.gather([(key, _detached(out)) for key, out in first.items()]))
        record = self._figures([piece for _, piece in pieces], [produced[key] for key, _ in pieces])
        record.update(self.objective.after_step(record))
        if self.objective.sampling.adaptive:
            record["proposal_swap"] = self._adapt_proposal([piece for _, piece in pieces], mine, record)
        world.check_same("objective state", self.objective.state_dict())
        elapsed = time.perf_counter() - started
        samples = sum(len(piece) for _, piece in pieces)
        tokens = sum(sum(map(len, piece.continuations)) for _, piece in pieces)
        record.update(step=self.steps_done, loss=loss, grad_norm=norm.item(), lr=lr, samples_per_s=samples / elapsed,
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
        return TrainingDiverged(f"step {self.steps_done + 1}: {what}. The last good checkpoint is "
                                f"{last[-1] if last else 'none (no step completed)'}; no model was saved. Lower the "
                                "learning rate (lr), enable max_grad_norm, or check the reward's scale")

    def backward(self, batch: ScoredSamples, weight: float) -> Step:
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

    def _adapt_proposal(self, pieces: list[ScoredSamples], mine: dict, record: dict) -> str:
        """Offers the objective's adaptive proposal the updated model (`bayeslm.training.proposal` decides, on the
        gathered global batch: every process makes the same decision); returns the decision."""
        def log_model() -> torch.Tensor:  # the updated model on this step's samples, in the global batch's order
            with torch.no_grad(), self._gathered():
                mine_scored = [(key, self.model.log_prob(b.sample_prompts, b.continuations).cpu())
                               for key, (_, b) in mine.items()]
            scored = dict(self.world.gather(mine_scored))
            return torch.cat([scored[key] for key in sorted(scored)])

        decision = self.objective.sampling.judge(pieces, record, log_model)
        if decision == "swapped":
            self.objective.sampling.copy = self._frozen_copy(f"proposal@{self.steps_done}")
        return decision

    def _frozen_copy(self, name: str, state: dict | None = None) -> LM:
        """A frozen copy of π_θ (with `state`'s weights, on resume), sharded like it."""
        frozen = self._plain("model") if self.sharded else copy.deepcopy(self.model.model)
        frozen.requires_grad_(False)
        if state is not None:
            checkpoint.load_trainable_state(frozen, state)
        if self.sharded:
            self.sharded["proposal"] = sharding.Sharded.of(frozen)
        return self.model.view(model=frozen, name=name, autocast=self.model.autocast)


def _detached(out: Step) -> Step:
    """A step's per-sample outputs on the CPU, without the loss (what the figures need of it)."""
    return Step(None, *(None if x is None else x.cpu() for x in (out.log_model, out.kl_prior, out.log_prior)))


def _cat(parts: list) -> torch.Tensor | None:
    """The parts concatenated, or None when an objective did not compute them."""
    return None if any(part is None for part in parts) else torch.cat(parts)
