"""The target posterior π*(x|c) = π0(x|c)·φ(x,c) / Z(c): what the user wants, stated apart from how to get it.

`prior * potential` builds one, reading like the maths:

    target = prior * Exponential(sentiment(), beta=0.1)
    target = (prior * Constraint(keyword(["movie"]))).given(["Tell me about"], max_new_tokens=20)

A target also fixes the contexts c it is conditioned on (a list of prompts, weighted uniformly) and the space
of continuations: at most `max_new_tokens` tokens, EOS included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from bayeslm.distributions.lm import LM, Samples
from bayeslm.modelling.potentials.base import Potential, statistics_of
from bayeslm.modelling.scored import ScoredSamples


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
        if isinstance(prompts, str):  # a string is a sequence too: it would be one prompt per character
            raise TypeError(f"given takes a list of prompts, got the string {prompts!r}: write "
                            f"given([{prompts!r}])")
        return replace(self, prompts=list(prompts),
                       max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens)

    def fingerprint(self) -> dict:
        """What makes this target the posterior it is, in plain data: its prior, potential, prompts and length (a
        run refuses to resume towards another)."""
        return {"prior": self.prior.name, "potential": repr(self.potential), "prompts": list(self.prompts),
                "max_new_tokens": self.max_new_tokens}

    @property
    def reward_name(self) -> str:
        """The statistic reported as the reward: the first potential's first statistic."""
        return self.potential.names[0]

    def score(self, prompts: Sequence[str], prompt_index: torch.Tensor, continuations, texts: Sequence[str], *,
              log_proposal: torch.Tensor, log_prior: torch.Tensor | None = None,
              token_log_probs: torch.Tensor | None = None, proposal: str = "proposal") -> ScoredSamples:
        """Scores continuations (token ids, with their decoded texts) of `prompts[prompt_index[i]]`, drawn with
        log-probabilities `log_proposal`; pass `log_prior` if already known (NaN: left for an objective to fill)."""
        sample_prompts = [prompts[i] for i in prompt_index.tolist()]
        if log_prior is None:
            with torch.no_grad():
                log_prior = self.prior.log_prob(sample_prompts, continuations)
        stats = statistics_of(self.potential, texts, sample_prompts, continuations)
        return ScoredSamples(list(prompts), prompt_index.cpu(), [list(c) for c in continuations], list(texts),
                             log_proposal.detach().double().cpu(), log_prior.detach().double().cpu(),
                             self.potential.log_phi(stats), stats, self.reward_name, token_log_probs=token_log_probs,
                             proposal=proposal)

    def score_samples(self, samples: Samples, sampler: LM, *, prompts: Sequence[str] | None = None,
                      prompt_index: torch.Tensor | None = None, keep_tokens: bool = False,
                      score_prior: bool = True) -> ScoredSamples:
        """Scores samples drawn from `sampler`. Their rows belong to `samples.prompts` unless `prompts` and
        `prompt_index` say otherwise. When the sampler is the prior's very distribution, the samples' own
        log-probabilities are log π0 and no second forward pass is run; without `score_prior` log π0 is left NaN.
        `keep_tokens` keeps the per-token log-probabilities of the sampler."""
        if prompt_index is None:
            prompts, prompt_index = samples.prompts, torch.arange(len(samples.prompts)).repeat_interleave(samples.n)
        known = samples.log_prob if sampler.same_distribution(self.prior) else None
        if not score_prior:
            known = torch.full((len(samples),), math.nan, dtype=torch.float64)
        return self.score(prompts, prompt_index, samples.continuations, samples.texts, log_proposal=samples.log_prob,
                          log_prior=known, token_log_probs=samples.token_log_probs if keep_tokens else None,
                          proposal=sampler.name)


Potential.target_type = Target  # what `prior * potential` makes (see Potential.target_type)
