"""An objective and a sampler defined outside the package, as a user would write them, reached by dotted path
(`objective: {extension_fixtures:SelfNormalisedForwardKL: {}}`, `--method extension_fixtures:Weighted`)."""

from dataclasses import dataclass
from typing import ClassVar

import torch

import bayeslm as bl
from bayeslm.config import field, positive
from bayeslm.samplers.pool import generators, propose


@dataclass
class SelfNormalisedForwardKL(bl.Objective):
    """Forward KL(π*‖π_θ) with self-normalised weights over each prompt's samples of the prior:
    ∇ ≈ −Σ_i softmax_i(log P − log q) ∇log π_θ(x_i)."""

    name: ClassVar[str] = "snis-forward-kl"
    proposal = "prior"
    scale: float = field(1.0, doc="a factor on the loss", check=positive)

    def loss(self, model, prior, batch):
        log_model = model.log_prob(batch.sample_prompts, batch.continuations)
        weights = torch.softmax(batch.log_w.reshape(-1, batch.group), 1).reshape(-1)
        return bl.Step(-self.scale * (weights.float() * log_model).sum() / (len(batch) // batch.group),
                       log_model.detach().double())


@dataclass
class Weighted(bl.Sampler):
    """Importance sampling in `rounds` batches of proposals: each sample weighted by P/q."""

    name: ClassVar[str] = "weighted"
    rounds: int = field(1, doc="batches of proposals", check=positive)

    def sample(self, target, proposal=None, n=256, *, seed=0):
        proposal = proposal or target.prior
        draw, _ = generators(proposal, seed)
        pools = [propose(target, proposal, n // self.rounds, generator=draw) for _ in range(self.rounds)]
        pool = bl.ScoredSamples.cat(pools).sorted_by_prompt()
        return bl.Draws("weighted", pool, pool.log_w, requested=n, proposals=pool.counts())
