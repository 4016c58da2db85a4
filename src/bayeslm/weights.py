"""Log-weight arithmetic: the one place where importance weights become estimates.

Samples x_i ~ q(·|c) of a proposal carry log-weights log w_i = log P(x_i|c) − log q(x_i|c), with P = π0·φ the
unnormalised target. Everything bayeslm estimates from them goes through these functions, always in log space:

    log Ẑ(c)        = log mean_i w_i                             unbiased for Z(c) on the linear scale
    r_i             = w_i / Ẑ(c)                                 normalised weights, mean 1 per prompt
    E_π*[f]         ≈ mean_i r_i·f(x_i)                          self-normalised importance sampling (SNIS)
    ESS(c)          = (Σ_i w_i)² / Σ_i w_i²                      effective sample size, 0 when every w_i = 0

Each estimate is made per prompt and averaged over the prompts; its standard error comes from the per-sample
influences (the delta method, so that estimated normalisers count as estimated). Tensors shaped [C, n] hold n
samples of each of C prompts; a prompt with fewer rows is a separate 1-D tensor in a list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

ZERO = torch.zeros((), dtype=torch.float64)


class NoSupport(ValueError):
    """Every sample of some prompt has zero target weight: nothing to estimate from. `prompts` names them."""

    def __init__(self, message: str, prompts=()):
        super().__init__(message)
        self.prompts = list(prompts)


@dataclass(frozen=True)
class Estimate:
    """A value and its standard error (both in the figure's own units; nats for logs and KLs). `unreliable` says
    why the standard error cannot be trusted, when it cannot (see `pareto_k`)."""

    value: float
    stderr: float
    unreliable: str | None = None

    def to_json(self) -> dict:
        out = {"value": json_float(self.value), "stderr": json_float(self.stderr)}
        if self.unreliable is not None:
            out["unreliable"] = self.unreliable
        return out

    def __str__(self) -> str:
        shown = f"{self.value:.4f} ± {self.stderr:.4f}" if math.isfinite(self.value) else f"{self.value}"
        return shown + (" (unreliable)" if self.unreliable else "")


def json_float(x: float) -> float | None:
    """JSON has neither infinity nor NaN: an infinite KL or an undefined figure is null."""
    return float(x) if math.isfinite(x) else None


def log_mean_exp(log_x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log mean exp(log_x) along `dim`, without leaving log space."""
    return torch.logsumexp(log_x, dim) - math.log(log_x.shape[dim])


def normalise(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt of log_w [C, n]: log Ẑ [C] and the normalised weights r = w/Ẑ [C, n] (mean 1 per prompt)."""
    log_z = log_mean_exp(log_w, -1)
    return log_z, torch.exp(log_w - log_z[..., None])


def snis_mean(values: torch.Tensor, ratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-normalised mean of values [C, n] under π*, given r = w/Ẑ; returns per-prompt means [C] and their
    influences [C, n]. Samples with zero weight contribute nothing, even where the value is infinite."""
    n = values.shape[-1]
    mean = torch.where(ratio > 0, ratio * values, ZERO).sum(-1) / n
    influence = torch.where(ratio > 0, ratio * (values - mean[..., None]), ZERO)
    return mean, influence


def forward_kl(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(π*‖q) = E_π*[log w] − log Z per prompt of log_w [..., n] (samples of q), with each sample's influence
    [..., n] on it: the SNIS mean of log w's and log Ẑ's, log Ẑ counted as estimated."""
    log_z, ratio = normalise(log_w)
    eubo, influence = snis_mean(log_w, ratio)
    return eubo - log_z, influence - (ratio - 1)


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """(Σw)²/Σw² per prompt of log_w [C, n] (or [n]), from the log-weights; 0 where every weight is 0."""
    ess = torch.exp(2 * torch.logsumexp(log_w, -1) - torch.logsumexp(2 * log_w, -1))
    return ess.nan_to_num(nan=0.0)


def combine(per_prompt, influences) -> Estimate:
    """Mean over prompts of per-prompt estimates [C], with the standard error from each prompt's per-sample
    influences (the delta method): Var = Σ_c Var(influence_c)/n_c / C². `influences` is [C, n] or a sequence of
    C one-dimensional tensors (prompts may have different numbers of samples)."""
    per_prompt = torch.as_tensor(per_prompt, dtype=torch.float64)
    value = per_prompt.mean().item()
    if not math.isfinite(value):
        return Estimate(value, 0.0)
    variance = sum(f.var(correction=1).item() / len(f) if len(f) > 1 else math.inf for f in influences)
    return Estimate(value, math.sqrt(variance) / len(per_prompt))


def difference(a: Estimate, b: Estimate) -> Estimate:
    """a − b for estimates from independent samples: their variances add; unreliable where either is, or where
    floating point cannot hold the difference (`rounding`)."""
    value = a.value - b.value
    return Estimate(value, math.hypot(a.stderr, b.stderr), a.unreliable or b.unreliable or rounding(a.value, b.value))


# Sums of a few thousand float64 terms keep about 2^-40 of their magnitude; a difference of two of them needs that
# below a thousandth of a nat (log φ past ~1e9: a β of 1e-9 on a reward of order 1).
ROUNDING, PRECISION = 2.0 ** -40, 1e-3


def rounding(a: float, b: float) -> str | None:
    """Why a − b cannot be trusted when a and b are so large that floating point loses their difference."""
    lost = (abs(a) + abs(b)) * ROUNDING
    if math.isfinite(lost) and lost > PRECISION:
        return (f"a difference of two figures near {max(abs(a), abs(b)):.3g}, of which floating point keeps only "
                f"about ±{lost:.3g}: log φ is too large (a larger β keeps it exact)")
    return None


def mean(values: Sequence[torch.Tensor] | torch.Tensor) -> Estimate:
    """The plain Monte Carlo mean of values [C, n], or of C one-dimensional tensors (per prompt, then over
    prompts)."""
    per_prompt = [v.mean() for v in values]
    return combine(per_prompt, [v - m for v, m in zip(values, per_prompt)])


def log_z(groups: Sequence[torch.Tensor] | torch.Tensor, prompts: Sequence[str] | None = None
          ) -> tuple[Estimate, torch.Tensor]:
    """The importance-sampling log Ẑ of each prompt's log-weights (a [C, n] tensor or C 1-D tensors) and their
    mean over prompts with its standard error (influence r − 1; none where a prompt has no positive weight),
    marked unreliable where the weights' tail is too heavy (`heaviest_tail`)."""
    per_prompt, influences = [], []
    for lw in groups:
        log_z_c, ratio = normalise(lw)
        per_prompt.append(log_z_c.item())
        influences.append(ratio - 1 if math.isfinite(log_z_c) else torch.zeros_like(lw))
    estimate = combine(per_prompt, influences)
    _, warning = heaviest_tail(groups, prompts)
    return Estimate(estimate.value, estimate.stderr, warning), torch.tensor(per_prompt, dtype=torch.float64)


def heaviest_tail(groups: Sequence[torch.Tensor] | torch.Tensor, prompts: Sequence[str] | None = None
                  ) -> tuple[float, str | None]:
    """The largest Pareto k̂ over the prompts' weights (−inf when none has positive weight) and, when it passes
    `k_threshold` of their sample size, why estimates from these weights cannot be trusted (else None)."""
    worst, where, size = -math.inf, 0, 0
    for c, lw in enumerate(groups):
        if torch.isfinite(lw).any():
            k = pareto_k(lw)
            if k > worst:
                worst, where, size = k, c, len(lw)
    if size == 0 or worst <= k_threshold(size):
        return worst, None
    prompt = f" of prompt {prompts[where]!r}" if prompts is not None else ""
    if not can_judge(size):
        return worst, (f"{size} samples{prompt} are too few to judge the tail of the importance weights (Pareto k̂ "
                       f"needs at least {FEWEST_JUDGED}), so the standard error cannot be trusted; draw more samples")
    return worst, (f"Pareto k̂ = {worst:.2f} > {k_threshold(size):.2f}: the largest importance weights{prompt} "
                   f"have a tail too heavy for {size} samples, so the estimate and its standard error may be far off; "
                   "draw more samples, use a proposal closer to the target, or compare with exact samples")


def total_ess(groups: Sequence[torch.Tensor] | torch.Tensor) -> float:
    """The effective sample sizes of each prompt's log-weights, summed over prompts."""
    return sum(effective_sample_size(lw).item() for lw in groups)


def pareto_k(log_w: torch.Tensor) -> float:
    """The Pareto k̂ of one prompt's importance weights [n]: the shape of a generalised Pareto distribution fitted
    to their largest M = ⌈min(n/5, 3√n)⌉ values (Pareto-smoothed importance sampling: Vehtari, Simpson, Gelman, Yao &
    Gabry, JMLR 2024; the fit of Zhang & Stephens 2009 with the weakly informative prior of the loo package).

    The variance of w is finite only for k < 1/2 and its mean only for k < 1; past `k_threshold(n)` a self-normalised
    estimate and its standard error are not to be trusted, however small the standard error looks, because the
    samples have not seen the tail that dominates the expectation. −inf when the largest weights are all equal
    (bounded weights, e.g. a constraint under the prior, met by at least 5 samples); inf when too few samples leave
    nothing to judge (of the non-zero weights, when zeros reach into the tail)."""
    lw = np.sort(log_w.detach().double().cpu().numpy())
    n = len(lw)
    tail = _tail_size(n)
    if not can_judge(n) or not np.isfinite(lw[-1]):
        return math.inf
    lw = _merge_ties(lw)
    lw = lw - lw[-1]
    top = lw[-tail:]
    if not np.isfinite(top).all():  # fewer non-zero weights than the tail: the zeros change no moment's finiteness,
        positive = lw[np.isfinite(lw)]  # so judge the non-zero ones (a constraint met rarely, say)
        if len(positive) >= MIN_TAIL and (positive == 0).all():
            return -math.inf
        return pareto_k(torch.from_numpy(positive))
    if top[0] == 0:  # the largest weights all equal: bounded, the best case (loo and arviz refuse to fit: inf)
        return -math.inf
    # The cutoff is the largest weight below the tail. Weights of discrete sequences tie; a tie block straddling the
    # cutoff would leave a handful of exceedances (loo and arviz then give up: inf), so the whole block stays in.
    below = lw[lw < lw[-tail]]
    cutoff = np.exp(below[-1]) if len(below) else 0.0
    exceedances = np.exp(top) - cutoff
    if not (exceedances > 0).all():  # tail weights over ~745 nats below the largest underflow: as heavy as tails get
        return math.inf
    return _generalised_pareto_shape(exceedances)


def _merge_ties(lw: np.ndarray) -> np.ndarray:
    """Sorted log-weights with those within TIE of their neighbour made equal. Log-probabilities in float32 differ
    by ~1e-6 between a sampler and a scorer, which splits the ties of a discrete space into clusters of nearly
    equal weights; a tail fitted to those (x − cutoff ≈ 1e-6) gives any k̂ at all (9.3 for weights bounded by e²)."""
    finite = lw[np.isfinite(lw)]  # zero weights (−inf) come first and stay
    gaps = np.diff(finite)
    gaps[gaps < TIE] = 0.0
    return np.concatenate([lw[:len(lw) - len(finite)], finite[0] + np.concatenate([[0.0], np.cumsum(gaps)])])


TIE = 1e-5  # nats: log-weights closer than this are the same weight (a ratio of 1.00001, far below any tail)
MIN_TAIL = 5  # the fewest largest weights a generalised Pareto fit is made from


def _tail_size(n: int) -> int:
    return math.ceil(min(0.2 * n, 3 * math.sqrt(n)))


def can_judge(n: int) -> bool:
    """Whether n weights have a tail large enough for `pareto_k` to judge (else k̂ is inf: unreliable)."""
    return _tail_size(n) >= MIN_TAIL


FEWEST_JUDGED = next(n for n in range(1, 1000) if can_judge(n))  # 21: for messages


def _generalised_pareto_shape(x: np.ndarray) -> float:
    """Zhang & Stephens' (2009) estimate of the shape k of a generalised Pareto distribution from x > 0 (sorted):
    a posterior mean over a grid of b = −k/σ, each weighted by its profile likelihood; then shrunk towards 0.5 by a
    weak prior worth 10 observations, which steadies small tails (loo's `gpdfit`)."""
    n = len(x)
    grid = 80 + math.floor(math.sqrt(n))
    j = np.arange(1, grid + 1)
    b = 1 / x[-1] + (1 - np.sqrt(grid / (j - 0.5))) / 3 / x[math.floor(n / 4 + 0.5) - 1]
    k_b = np.log1p(-b[:, None] * x[None, :]).mean(1)
    # A grid point far less likely than another overflows exp to inf: its weight 1/inf = 0 is the right limit,
    # not a fault to tell the user about (nor is a degenerate point's 0/0, whose NaN the mean below carries).
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        log_lik = n * (np.log(-b / k_b) - k_b - 1)
        posterior = 1 / np.exp(log_lik[None, :] - log_lik[:, None]).sum(1)
    k = np.log1p(-(b * posterior).sum() * x).mean()
    return float((n * k + 10 * 0.5) / (n + 10))


def k_threshold(n: int) -> float:
    """The k̂ above which n importance-weighted samples are not to be trusted: min(1 − 1/log10 n, 0.7) (Vehtari et
    al. 2024, §3.2.3: below it the error falls with n at the usual rate, given enough samples)."""
    return min(1 - 1 / math.log10(n), 0.7) if n > 1 else -math.inf
