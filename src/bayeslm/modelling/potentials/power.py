"""φ(x|c) = π0(x|c)^(α−1): the target π* ∝ π0^α, the prior's own distribution over whole continuations raised to
a power and renormalised (Karan & Du 2026, "Reasoning with Sampling").

That is not sampling at a low temperature: a temperature sharpens each next-token distribution apart, π0(x_t|x<t)^α
renormalised at every step, which ignores how much probability each choice leaves to the rest of the sequence;
π0^α renormalises once, over whole sequences, so it prefers a prefix by the mass of its completions too. For
α > 1 it sharpens towards the prior's likely outputs (its mode as α → ∞); α < 1 flattens it. In bayeslm's terms it
is the KL-regularised RL posterior of the dense reward (α−1)·log π0 at β = 1, so every sampler and objective
applies and every figure is measured against it; KL-RL credits each token with (α−1)·log π0 of it and of the
tokens after it (`token_log_phi`), which has the sequence reward's expectation and less variance.

As a prefix potential (SMC steers by it), an unfinished prefix y gets ψ(y) = π0(y|c)^(α−1), the exact product of
its tokens' probabilities: the intermediate targets are then π0^α on prefixes, and ψ never rules a prefix out.
Scoring costs one forward pass of the prior over each batch, on top of the target's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from bayeslm.config import field, positive, validate
from bayeslm.modelling.potentials.base import POTENTIALS, Potential


@POTENTIALS.register
@dataclass
class Power:
    """The prior raised to a power over whole continuations: π* ∝ π0^α (α > 1 sharpens, α < 1 flattens)."""

    name: ClassVar[str] = "power"
    alpha: float = field(doc="the power α; φ = π0(x|c)^(α−1)", check=positive)

    def __post_init__(self):
        validate(self)

    def build(self, prior, prompts=None, max_new_tokens=None) -> PowerOf:
        return PowerOf(prior, self.alpha)


class PowerOf(Potential):
    """φ = π0^(α−1) for one prior; its statistic is log π0(x|c) of each continuation."""

    judges_prefixes = True

    reads_tokens = True

    def __init__(self, prior, alpha: float):
        if not alpha > 0:
            raise ValueError(f"power: alpha must be > 0, got {alpha}")
        self.prior, self.alpha = prior, float(alpha)

    def __repr__(self) -> str:
        return f"Power(alpha={self.alpha:g})"

    @property
    def names(self):
        return ["log_prior"]

    def statistics(self, texts: Sequence[str], prompts: Sequence[str], tokens) -> dict:
        with torch.no_grad():
            return {"log_prior": self.prior.log_prob(list(prompts), [list(t) for t in tokens]).double().cpu()}

    def log_phi(self, stats) -> torch.Tensor:
        return (self.alpha - 1) * stats["log_prior"]

    def token_log_phi(self, prompts, continuations, prior_token_log_probs):
        """(α−1)·log π0(x_t|x<t) at each token: KL-RL's dense reward towards π0^α."""
        return (self.alpha - 1) * prior_token_log_probs

    def prefix_log_phi(self, texts: Sequence[str], prompts: Sequence[str], tokens=None) -> torch.Tensor:
        return self.log_phi(self.statistics(texts, prompts, tokens))


def power(prior, alpha: float) -> PowerOf:
    """`prior * power(prior, α)`: the target π* ∝ π0^α."""
    return PowerOf(prior, alpha)
