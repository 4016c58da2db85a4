"""The target posterior π*(x|c) = π0(x|c)·φ(x,c) / Z(c): what the user wants, stated apart from how to get it.

`prior * potential` builds one, reading like the maths:

    target = prior * Exponential(sentiment(), beta=0.1)
    target = (prior * Constraint(keyword(["movie"]))).given(["Tell me about"], max_new_tokens=20)

A target also fixes the contexts c it is conditioned on (a list of prompts, weighted uniformly) and the space
of continuations: at most `max_new_tokens` tokens, EOS included.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from bayeslm.lm import LM, Samples
from bayeslm.potentials import Potential, Statistics


@dataclass
class Scored:
    """Target quantities of a batch of continuations: log π0, log φ and the potentials' statistics."""

    log_prior: torch.Tensor
    log_phi: torch.Tensor
    stats: Statistics

    @property
    def log_target(self) -> torch.Tensor:
        """Unnormalised log π*(x|c) = log π0(x|c) + log φ(x,c)."""
        return self.log_prior + self.log_phi


@dataclass
class Target:
    prior: LM
    potential: Potential
    prompts: list[str] = field(default_factory=lambda: [""])
    max_new_tokens: int = 32

    def __post_init__(self):
        if isinstance(self.prompts, str):
            raise TypeError("prompts must be a list of strings, not one string: wrap it as [prompt]")
        self.prompts = list(self.prompts)
        if not self.prompts:
            raise ValueError("a target needs at least one prompt (use [\"\"] for unconditional generation)")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def __repr__(self) -> str:
        return (f"Target({self.prior.name} * {self.potential!r}, {len(self.prompts)} prompt(s), "
                f"max_new_tokens={self.max_new_tokens})")

    def __mul__(self, potential: Potential) -> Target:
        return replace(self, potential=self.potential * potential)

    def given(self, prompts: Sequence[str], max_new_tokens: int | None = None) -> Target:
        """The same target conditioned on other prompts (and optionally another length limit)."""
        return replace(self, prompts=list(prompts),
                       max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens)

    @property
    def reward_name(self) -> str:
        """The statistic reported as the reward: the first potential's first statistic."""
        return self.potential.names[0]

    def score(self, prompts: Sequence[str], continuations, texts: Sequence[str],
              log_prior: torch.Tensor | None = None) -> Scored:
        """Scores continuations (token ids, with their decoded texts); pass `log_prior` if already known."""
        if log_prior is None:
            with torch.no_grad():
                log_prior = self.prior.log_prob(prompts, continuations)
        stats = self.potential.statistics(texts, prompts)
        return Scored(log_prior.detach().double().cpu(), self.potential.log_phi(stats), stats)

    def score_samples(self, samples: Samples, sampler: LM) -> Scored:
        """Scores samples drawn from `sampler`; when it is the prior's very distribution, the samples'
        own log-probabilities are log π0 and no second forward pass is run."""
        known = samples.log_prob if sampler.same_distribution(self.prior) else None
        return self.score(samples.sample_prompts, samples.continuations, samples.texts, log_prior=known)
