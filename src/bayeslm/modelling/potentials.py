"""Potentials φ(x, c) ≥ 0: the evidence that turns a prior into a target, held in log space.

Each potential reports named *statistics* of a batch (the reward, the constraint's satisfaction, the
features) and computes log φ from them, so a reward is evaluated once per sample:

    Exponential(r, β)             log φ = r(x)/β               the KL-regularised RL posterior
    Constraint(b)                 log φ = 0 if b(x) else -inf  a pointwise constraint (GDC)
    ExponentialFamily(f, λ)       log φ = λ·f(x)               moment constraints, once λ is fitted

Potentials multiply: `Exponential(...) * Constraint(...)` is a `Product` whose log φ is the sum.
"""

from __future__ import annotations

from typing import Sequence

import torch

from bayeslm.modelling.rewards import as_reward

Statistics = dict[str, torch.Tensor]


class Potential:
    @property
    def names(self) -> list[str]:
        """Names of the statistics, in order; the first is what the scorecard reports as the reward."""
        raise NotImplementedError

    def statistics(self, texts: Sequence[str], prompts: Sequence[str]) -> Statistics:
        """Named per-sample values [B] (float64) that log φ is computed from."""
        raise NotImplementedError

    def log_phi(self, stats: Statistics) -> torch.Tensor:
        """log φ [B] (float64, may be -inf) from the statistics."""
        raise NotImplementedError

    def __call__(self, texts: Sequence[str], prompts: Sequence[str]) -> torch.Tensor:
        return self.log_phi(self.statistics(texts, prompts))

    def __mul__(self, other: Potential) -> Product:
        if not isinstance(other, Potential):
            return NotImplemented
        return Product([*_factors(self), *_factors(other)])


def _factors(p: Potential) -> list[Potential]:
    return p.factors if isinstance(p, Product) else [p]


class Exponential(Potential):
    """φ(x) = exp(r(x)/β): the target of KL-regularised RL with reward r and KL coefficient β."""

    def __init__(self, reward, beta: float):
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta} (beta -> 0 is pure reward maximisation, whose optimum "
                             "is a collapsed distribution)")
        self.reward = as_reward(reward)
        self.beta = float(beta)

    def __repr__(self) -> str:
        return f"Exponential({self.reward.name}, beta={self.beta})"

    @property
    def names(self):
        return [self.reward.name]

    def statistics(self, texts, prompts):
        return {self.reward.name: self.reward(texts, prompts)}

    def log_phi(self, stats):
        return stats[self.reward.name] / self.beta


class Constraint(Potential):
    """φ(x) = 1[b(x)]. With no bounds, b(x) holds when the predicate's value is non-zero; with `at_least`
    and/or `at_most` it holds when the value lies within them (e.g. offensiveness at_most 0.5).
    Its statistic is the satisfaction indicator."""

    def __init__(self, predicate, *, at_least: float | None = None, at_most: float | None = None):
        self.predicate = as_reward(predicate)
        self.at_least, self.at_most = at_least, at_most
        bounds = "".join([f">={at_least}" if at_least is not None else "",
                          f"<={at_most}" if at_most is not None else ""])
        if at_least is not None and at_most is not None and at_least > at_most:
            raise ValueError(f"at_least={at_least} > at_most={at_most}: no value can satisfy the constraint")
        # Its statistic is satisfaction, not the predicate's value: named apart from any reward on it.
        self.name = f"satisfied({self.predicate.name}{bounds})"

    def __repr__(self) -> str:
        return f"Constraint({self.name})"

    @property
    def names(self):
        return [self.name]

    def statistics(self, texts, prompts):
        value = self.predicate(texts, prompts)
        if self.at_least is None and self.at_most is None:
            holds = value != 0
        else:
            holds = torch.ones_like(value, dtype=torch.bool)
            if self.at_least is not None:
                holds &= value >= self.at_least
            if self.at_most is not None:
                holds &= value <= self.at_most
        return {self.name: holds.double()}

    def log_phi(self, stats):
        satisfied = stats[self.name]
        return torch.where(satisfied > 0, 0.0, float("-inf")).double()


class ExponentialFamily(Potential):
    """φ(x) = exp(Σ_k λ_k f_k(x)). Build one that meets given moments with `constrain`."""

    def __init__(self, features: Sequence, coefficients: Sequence[float]):
        self.features = [as_reward(f) for f in features]
        self.coefficients = torch.as_tensor(coefficients, dtype=torch.float64).reshape(-1)
        if len(self.features) != len(self.coefficients) or not self.features:
            raise ValueError(f"give one coefficient per feature: {len(self.features)} features, "
                             f"{len(self.coefficients)} coefficients")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names must be distinct, got {names}")

    def __repr__(self) -> str:
        terms = ", ".join(f"{f.name}: {c:.4g}" for f, c in zip(self.features, self.coefficients.tolist()))
        return f"ExponentialFamily({terms})"

    @property
    def names(self):
        return [f.name for f in self.features]

    def statistics(self, texts, prompts):
        return {f.name: f(texts, prompts) for f in self.features}

    def log_phi(self, stats):
        values = torch.stack([stats[f.name] for f in self.features], -1)
        return values @ self.coefficients


class Product(Potential):
    """φ = Π_i φ_i, i.e. log φ = Σ_i log φ_i."""

    def __init__(self, factors: Sequence[Potential]):
        self.factors = list(factors)
        names = [name for factor in self.factors for name in factor.names]
        if len(set(names)) != len(names):
            raise ValueError(f"the potentials report statistics {names}, some under the same name; give their "
                             "rewards distinct names (Reward(fn, name=...))")

    def __repr__(self) -> str:
        return " * ".join(map(repr, self.factors))

    @property
    def names(self):
        return [name for factor in self.factors for name in factor.names]

    def statistics(self, texts, prompts):
        return {name: value for factor in self.factors for name, value in factor.statistics(texts, prompts).items()}

    def log_phi(self, stats):
        return sum(factor.log_phi(stats) for factor in self.factors)


def fit_coefficients(features: torch.Tensor, log_weights: torch.Tensor, moments: torch.Tensor,
                     *, tol: float = 1e-3, max_iter: int = 100) -> torch.Tensor:
    """λ such that the self-normalised importance estimate of E_π*[f] equals `moments`.

    features [C, n, K] and log_weights [C, n] (log π0 − log q of samples from q, per prompt c). With
    π*_λ ∝ π0 exp(λ·f), the moment conditions are the stationarity conditions of the convex dual
    D(λ) = mean_c log Ẑ_c(λ) − λ·μ, minimised here by damped Newton steps.
    """
    C, n, K = features.shape
    lam = torch.zeros(K, dtype=torch.float64)

    def dual(lam):
        return torch.logsumexp(log_weights + features @ lam, -1).mean() - lam @ moments

    for _ in range(max_iter):
        w = torch.softmax(log_weights + features @ lam, -1)  # [C, n]
        mean = (w[..., None] * features).sum(1)  # [C, K]
        grad = mean.mean(0) - moments
        if grad.abs().max() < tol:
            return lam
        centred = features - mean[:, None, :]
        hessian = torch.einsum("cn,cnk,cnl->kl", w, centred, centred) / C
        step = torch.linalg.solve(hessian + 1e-9 * torch.eye(K, dtype=torch.float64), grad)
        size, current = 1.0, dual(lam)
        while dual(lam - size * step) > current - 1e-4 * size * (grad @ step) and size > 1e-6:
            size /= 2
        lam = lam - size * step
    achieved = (torch.softmax(log_weights + features @ lam, -1)[..., None] * features).sum(1).mean(0)
    raise ValueError(f"could not fit the moments {moments.tolist()}: the closest reached from these samples is "
                     f"{[round(a, 4) for a in achieved.tolist()]}. Draw more samples (n), or use a proposal "
                     "that produces more samples with the wanted features")


def constrain(prior, features: Sequence, moments: Sequence[float], *, prompts: Sequence[str] = ("",),
              max_new_tokens: int = 32, n: int = 1024, proposal=None, seed: int = 0) -> ExponentialFamily:
    """The exponential family π* ∝ π0·exp(λ·f) whose feature means hit `moments`, e.g.
    `constrain(prior, [keyword(["movie"])], [0.4])` for "40% of samples mention a movie" (GDC's moment
    constraints). λ is fitted by self-normalised importance sampling from n samples per prompt of the
    proposal (default: the prior); the means are averaged over the prompts."""
    features = [as_reward(f) for f in features]
    moments = torch.as_tensor(moments, dtype=torch.float64).reshape(-1)
    if len(features) != len(moments):
        raise ValueError(f"give one moment per feature: {len(features)} features, {len(moments)} moments")
    proposal = proposal or prior
    samples = proposal.sample(list(prompts), n, max_new_tokens, seed=seed)
    log_weights = torch.zeros(len(samples), dtype=torch.float64)
    if proposal is not prior:
        with torch.no_grad():
            log_weights = (prior.log_prob(samples.sample_prompts, samples.continuations).cpu()
                           - samples.log_prob).double()
    values = torch.stack([f(samples.texts, samples.sample_prompts) for f in features], -1)
    values = values.reshape(len(prompts), n, -1)
    low, high = values.amin(1).mean(0), values.amax(1).mean(0)
    for f, m, lo, hi in zip(features, moments.tolist(), low.tolist(), high.tolist()):
        if not lo < m < hi:
            raise ValueError(f"cannot fit the moment {m} of feature {f.name!r}: its values in {n} samples per "
                             f"prompt span only [{lo:.4g}, {hi:.4g}], and the moment must lie strictly inside. "
                             "Draw more samples (n), or use a proposal that produces the feature more often")
    lam = fit_coefficients(values, log_weights.reshape(len(prompts), n), moments)
    return ExponentialFamily(features, lam)
