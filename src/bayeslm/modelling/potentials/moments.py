"""Moment constraints (GDC): the exponential family π* ∝ π0·exp(λ·f) whose feature means hit given moments, λ
fitted by self-normalised importance sampling from samples of the prior (or another proposal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from bayeslm.config import field, positive, validate
from bayeslm.modelling.potentials.base import POTENTIALS
from bayeslm.modelling.potentials.exponential_family import ExponentialFamily, rewards_option
from bayeslm.modelling.rewards import as_reward


@POTENTIALS.register
@dataclass
class Moments:
    """The exponential family whose feature means under the target are `moments` (fitted from n samples per
    prompt of the prior when the target file is read)."""

    name: ClassVar[str] = "moments"
    features: Any = field(doc="the features f_k (a list of rewards)", convert=rewards_option,
                    kind="a list of rewards")
    moments: list[float] = field(doc="the wanted E_π*[f_k], one per feature, averaged over the prompts")
    n: int = field(1024, doc="prior samples per prompt to fit λ from", check=positive)
    seed: int = field(0, doc="seeds those samples")

    def __post_init__(self):
        validate(self)
        if len(self.features) != len(self.moments):
            raise ValueError(f"{len(self.features)} features but {len(self.moments)} moments; give one each")

    def build(self, prior, prompts: Sequence[str], max_new_tokens: int) -> ExponentialFamily:
        """The fitted potential, for the target's prior, prompts and length."""
        return constrain(prior, self.features, self.moments, prompts=prompts, max_new_tokens=max_new_tokens,
                         n=self.n, seed=self.seed)


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
