"""Best-of-n as a target: the law of the best of n prior samples under a reward is itself a posterior of the prior.

Draw n samples of π0(·|c) and keep the one with the highest reward r, ties broken uniformly at random. With F_c
the prior's CDF of the reward and F_c(r⁻) its mass strictly below r, the kept sample is x with probability

    π_BoN(x|c) = π0(x|c)·φ_n(x,c),    φ_n(x,c) = (F_c(r)^n − F_c(r⁻)^n) / (F_c(r) − F_c(r⁻)),   r = r(x,c)

(the chance that the maximum is r, shared among the texts of reward r in proportion to π0). So Z(c) = 1 exactly,
and φ_n rises with r: ranking by log φ_n is ranking by r (Amini, Vieira & Cotterell 2024, "Variational best-of-N
alignment"; Beirami et al. 2024 for KL(π_BoN‖π0) ≤ log n − (n−1)/n).

F_c is exact when the prior's continuations can be enumerated (toy priors), else the empirical CDF of m prior
samples per prompt. That approximation changes the target: a reward value never seen among the m samples gets the
continuous-score weight n·F_c(r)^(n−1) of the empirical F_c, so a text worse than all m samples gets weight 0;
the target is then the best of n under the empirical law, which converges to π_BoN as m grows. The target's name
says which F_c it uses (and m), so every scorecard shows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from bayeslm.config import field, positive, validate
from bayeslm.distributions.enumeration import MAX_SEQUENCES, continuations, count
from bayeslm.modelling.potentials.base import POTENTIALS, Potential
from bayeslm.modelling.rewards import as_reward


@POTENTIALS.register
@dataclass
class BestOf:
    """The law of the best of n prior samples under a reward (its prior CDF exact on toy priors, else from m
    prior samples per prompt, fitted when the target file is read)."""

    name: ClassVar[str] = "best_of"
    reward: Any = field(doc="the reward r that ranks the n samples (a reward's name or spec)", convert=as_reward,
                        kind="a reward")
    n: int = field(doc="how many prior samples the best is taken from", check=positive)
    m: int | None = field(None, doc="prior samples per prompt for the reward's CDF; null: exact by enumeration "
                                    "when the prior is small enough, else 4096", check=positive)
    seed: int = field(0, doc="seeds those samples")

    def __post_init__(self):
        validate(self)
        self.reward = as_reward(self.reward)

    def build(self, prior, prompts: Sequence[str], max_new_tokens: int) -> BestOfN:
        return best_of(prior, self.reward, self.n, prompts=prompts, max_new_tokens=max_new_tokens, m=self.m,
                       seed=self.seed)


class BestOfN(Potential):
    """φ_n of the module docstring, from per-prompt tables of the prior's reward distribution."""

    def __init__(self, reward, n: int, tables: dict[str, tuple[torch.Tensor, torch.Tensor]], source: str):
        self.reward, self.n, self.tables, self.source = reward, n, tables, source
        self._names = [reward.name, f"F({reward.name})", f"F({reward.name}⁻)"]

    def __repr__(self) -> str:
        return f"BestOf({self.reward.name}, n={self.n}, CDF {self.source})"

    @property
    def names(self):
        return self._names

    def statistics(self, texts, prompts):
        r = self.reward(texts, prompts)
        below, at = torch.empty_like(r), torch.empty_like(r)
        for prompt in dict.fromkeys(prompts):
            if prompt not in self.tables:
                raise ValueError(f"the best-of-{self.n} target knows the prior's rewards for its own prompts only, "
                                 f"not {prompt!r}: build it for the prompts it will see")
            values, cumulative = self.tables[prompt]
            rows = torch.tensor([p == prompt for p in prompts])
            # F(r) = mass of values ≤ r; F(r⁻) = mass of values < r (equal when r is no value of the table)
            at[rows] = _mass(values, cumulative, torch.searchsorted(values, r[rows], right=True))
            below[rows] = _mass(values, cumulative, torch.searchsorted(values, r[rows], right=False))
        return {self._names[0]: r, self._names[1]: at, self._names[2]: below}

    def kl_to_prior(self) -> dict:
        """KL(π_BoN‖π0) per prompt, exactly from the reward table (a sum over reward values, no sampling), beside
        the bound log n − (n−1)/n that is exact for continuous rewards (Beirami et al. 2024) and the gap."""
        out = {}
        for prompt, (values, cumulative) in self.tables.items():
            below = torch.cat([torch.zeros(1, dtype=torch.float64), cumulative[:-1]])
            mass = cumulative ** self.n - below ** self.n  # P(the best of n has reward r)
            stats = {self._names[1]: cumulative, self._names[2]: below}
            out[prompt] = torch.where(mass > 0, mass * self.log_phi(stats), 0.0).sum().item()
        bound = math.log(self.n) - (self.n - 1) / self.n
        mean = sum(out.values()) / len(out)
        return {"n": self.n, "kl_to_prior": mean, "per_prompt": out, "bound": bound, "gap": bound - mean}

    def log_phi(self, stats):
        f, f_below = stats[self._names[1]], stats[self._names[2]]
        n = self.n
        tied = f > f_below
        # log((F^n − F⁻^n)/(F − F⁻)) for a reward value of the table; n·F^(n−1) for one between its values
        ratio = torch.where(tied, f_below / f.clamp(min=1e-300), 0.0)
        log_tied = n * f.log() + torch.log1p(-ratio ** n) - (f - f_below).clamp(min=1e-300).log()
        log_between = math.log(n) + (n - 1) * f.log() if n > 1 else torch.zeros_like(f)
        return torch.where(tied, log_tied, log_between)


def _mass(values, cumulative, index):
    """The cumulative mass of the first `index` values of the table (0 for none)."""
    padded = torch.cat([torch.zeros(1, dtype=torch.float64), cumulative])
    return padded[index]


def best_of(prior, reward, n: int, *, prompts: Sequence[str], max_new_tokens: int, m: int | None = None,
            seed: int = 0) -> BestOfN:
    """The best-of-n potential of `reward` under `prior` for these prompts: `prior * best_of(...)` is π_BoN."""
    reward = as_reward(reward)
    tables = {}
    if m is None and count(prior.model.config.vocab_size, prior.eos_ids.tolist(), max_new_tokens) <= MAX_SEQUENCES:
        sequences = continuations(prior.model.config.vocab_size, prior.eos_ids.tolist(), max_new_tokens)
        texts = prior.decode(sequences)
        for prompt in dict.fromkeys(prompts):
            with torch.no_grad():
                log_prior = prior.log_prob([prompt] * len(sequences), sequences).double().cpu()
            tables[prompt] = _table(reward(texts, [prompt] * len(texts)), log_prior.exp())
        return BestOfN(reward, n, tables, "exact by enumeration")
    m = m or 4096
    for c, prompt in enumerate(dict.fromkeys(prompts)):
        texts = prior.sample([prompt], m, max_new_tokens, seed=seed + c).texts
        tables[prompt] = _table(reward(texts, [prompt] * m), torch.full((m,), 1 / m, dtype=torch.float64))
    return BestOfN(reward, n, tables, f"from {m} prior samples per prompt")


def _table(rewards: torch.Tensor, probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct reward values, sorted, and the cumulative probability of each."""
    values, inverse = torch.unique(rewards, sorted=True, return_inverse=True)
    mass = torch.zeros(len(values), dtype=torch.float64).index_add(0, inverse, probabilities.double())
    return values, mass.cumsum(0) / mass.sum()
