"""β planning: what KL-regularised RL would converge to for each β, estimated before any training.

KL-regularised RL with reward r and coefficient β maximises E_π[r] − β·KL(π‖π0); its optimum is the posterior
π*_β ∝ π0·exp(r/β) (Korbak, Perez & Buckley 2022). One pool of n prior samples per prompt, weighted by
w_β = exp(r/β) (self-normalised importance sampling, with the prior as proposal), predicts for every β

    log Z(β)         = log E_π0[w_β]
    E_π*_β[r]        = E_π0[w_β·r] / Z(β)
    KL(π*_β‖π0)      = E_π*_β[log w_β] − log Z(β)

each with a delta-method standard error, and the effective sample size (Σw)²/Σw² behind them. Smaller β tilts
harder, onto fewer samples: below MIN_ESS effective samples per prompt the figures are flagged as untrustworthy
(draw more samples, or plan for larger β). Both KL(π*_β‖π0) and E_π*_β[r] fall as β grows (their derivatives in
1/β are Var_π*(r)/β and Var_π*(r)), on the pool as in truth, so the β that meets a KL budget or a target reward
is found by bisection on log β.

The reward is the target's first Exponential potential; its β is replaced by each planned one. Any other factors
of the target stay in π*_β (with a constraint, π*_β is the KL-RL optimum among distributions that satisfy it;
the monotonicity above holds for constraints, not for every other factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from bayeslm.modelling.potentials.base import factors
from bayeslm.modelling.target import Target
from bayeslm.samplers.pool import generators, propose
from bayeslm.weights import (
    Estimate,
    combine,
    effective_sample_size,
    json_float,
    k_threshold,
    normalise,
    pareto_k,
    snis_mean,
)

MIN_ESS = 30.0  # effective samples per prompt below which a SNIS estimate is not to be trusted
LOG_BETA_RANGE = (-12.0, 12.0)  # bisection bracket for log β


class NoReward(ValueError):
    """The target has no Exponential potential, so there is no reward to plan β for."""


@dataclass(frozen=True)
class Prediction:
    """What KL-RL with coefficient β converges to (means over prompts); `ess` is summed over prompts."""

    beta: float
    target_reward_mean: Estimate
    kl_target_prior: Estimate
    log_z: Estimate
    ess: float
    min_ess: float  # the smallest per-prompt ESS
    pareto_k: float  # the largest per-prompt Pareto k̂ of the weights w_β (`bayeslm.weights.pareto_k`)
    pareto_k_threshold: float

    @property
    def trusted(self) -> bool:
        return self.min_ess >= MIN_ESS and self.pareto_k <= self.pareto_k_threshold

    def to_json(self) -> dict:
        return {"beta": self.beta, "target_reward_mean": self.target_reward_mean.to_json(),
                "kl_target_prior": self.kl_target_prior.to_json(), "log_z": self.log_z.to_json(), "ess": self.ess,
                "pareto_k": json_float(self.pareto_k), "trusted": self.trusted}


class Plan:
    """Predictions for any β from one pool of prior samples of a target with an Exponential potential."""

    def __init__(self, target: Target, n: int = 1024, *, seed: int = 0):
        exponentials = [f for f in factors(target.potential) if f.tempered() is not None]
        if not exponentials:
            raise NoReward(f"the target {target.potential!r} has no exponential potential: β planning needs a "
                             "reward r, given as `exponential: {reward: ..., beta: ...}` (its beta is replaced by "
                             "each planned one)")
        self.reward = exponentials[0]
        prior = target.prior
        pool = propose(target, prior, n, generator=generators(prior, seed)[0])
        self.reward_name = self.reward.tempered().reward.name
        self.r = pool.grid(pool.stats[self.reward_name])  # [C, n]
        rest = [f for f in factors(target.potential) if f is not self.reward]
        self.log_phi_rest = pool.grid(sum((f.log_phi(pool.stats) for f in rest),
                                          torch.zeros(len(pool), dtype=torch.float64)))
        if torch.isneginf(self.log_phi_rest).all(1).any():
            raise ValueError(f"no prior sample of some prompt satisfies the target's other potentials {rest!r}: "
                             "draw more samples (n)")

    def at(self, beta: float) -> Prediction:
        """The figures of π*_β, with standard errors."""
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        log_phi = self.r / beta + self.log_phi_rest  # log w_β, the prior being the proposal
        log_z, ratio = normalise(log_phi)  # ratio = w/Ẑ, mean 1 per prompt
        reward, reward_influence = snis_mean(self.r, ratio)
        expected_log_phi, log_phi_influence = snis_mean(log_phi, ratio)
        ess = effective_sample_size(log_phi)
        return Prediction(
            float(beta),
            combine(reward.tolist(), reward_influence),
            combine((expected_log_phi - log_z).tolist(), log_phi_influence - (ratio - 1)),
            combine(log_z.tolist(), ratio - 1),
            ess.sum().item(), ess.min().item(), max(pareto_k(lw) for lw in log_phi), k_threshold(log_phi.shape[1]))

    def beta_for_kl(self, kl: float) -> float:
        """The β at which KL(π*_β‖π0) equals `kl` nats (the largest reward a KL budget allows)."""
        return self._solve(lambda p: p.kl_target_prior.value, kl, "KL(π*‖π0)")

    def vouched(self, beta: float, min_ess: float = MIN_ESS) -> float:
        """`beta`, raised by steps of 25% until the pool can vouch for its posterior (at least `min_ess` effective
        samples per prompt): with fewer, the predicted KL(π*‖π0) is capped near log n and nobody measured that tilt."""
        while self.at(beta).min_ess < min_ess:
            beta *= 1.25
        return beta

    def beta_for_reward(self, reward: float) -> float:
        """The β at which E_π*_β[r] equals `reward`."""
        return self._solve(lambda p: p.target_reward_mean.value, reward, f"E_π*[{self.reward_name}]")

    def _solve(self, figure, goal: float, name: str) -> float:
        """Bisection on log β for a figure that decreases as β grows."""
        low, high = LOG_BETA_RANGE
        at_low, at_high = figure(self.at(math.exp(low))), figure(self.at(math.exp(high)))
        if not at_high <= goal <= at_low:
            raise ValueError(f"{name} = {goal} is out of reach: on these samples it ranges from {at_high:.4g} "
                             f"(β = e^{high:g}) to {at_low:.4g} (β = e^{low:g}); draw more samples (n) to reach "
                             "further")
        for _ in range(60):
            middle = (low + high) / 2
            if figure(self.at(math.exp(middle))) > goal:
                low = middle
            else:
                high = middle
        return math.exp((low + high) / 2)


def plan(target: Target, betas: Sequence[float], n: int = 1024, *, seed: int = 0) -> list[Prediction]:
    """Predictions for each β from n prior samples per prompt."""
    planner = Plan(target, n, seed=seed)
    return [planner.at(beta) for beta in betas]


def plan_json(planner: Plan, betas: Sequence[float], *, kl_budget: float | None = None,
              reward: float | None = None) -> dict:
    """The predictions at `betas`, and at the β solved for a KL budget or a reward target, as JSON (what
    `bayeslm plan --json` prints and a run directory's plan.json holds)."""
    result = {"reward": planner.reward_name, "n": planner.r.shape[1],
              "betas": [planner.at(beta).to_json() for beta in betas]}
    if kl_budget is not None:
        result["kl_budget"] = {"goal": kl_budget, **planner.at(planner.beta_for_kl(kl_budget)).to_json()}
    if reward is not None:
        result["reward_target"] = {"goal": reward, **planner.at(planner.beta_for_reward(reward)).to_json()}
    return result
