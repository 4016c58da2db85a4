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

import torch

ZERO = torch.zeros((), dtype=torch.float64)


@dataclass(frozen=True)
class Estimate:
    """A value and its standard error (both in the figure's own units; nats for logs and KLs)."""

    value: float
    stderr: float

    def to_json(self) -> dict:
        return {"value": json_float(self.value), "stderr": json_float(self.stderr)}

    def __str__(self) -> str:
        return f"{self.value:.4f} ± {self.stderr:.4f}" if math.isfinite(self.value) else f"{self.value}"


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


def mean(values: torch.Tensor) -> Estimate:
    """The plain Monte Carlo mean of values [C, n] (per prompt, then over prompts)."""
    per_prompt = values.mean(-1)
    return combine(per_prompt, values - per_prompt[..., None])


def log_z(groups: Sequence[torch.Tensor] | torch.Tensor) -> tuple[Estimate, torch.Tensor]:
    """The importance-sampling log Ẑ of each prompt's log-weights (a [C, n] tensor or C 1-D tensors) and their
    mean over prompts with its standard error (influence r − 1; none where a prompt has no positive weight)."""
    per_prompt, influences = [], []
    for lw in groups:
        log_z_c, ratio = normalise(lw)
        per_prompt.append(log_z_c.item())
        influences.append(ratio - 1 if math.isfinite(log_z_c) else torch.zeros_like(lw))
    return combine(per_prompt, influences), torch.tensor(per_prompt, dtype=torch.float64)


def total_ess(groups: Sequence[torch.Tensor] | torch.Tensor) -> float:
    """The effective sample sizes of each prompt's log-weights, summed over prompts."""
    return sum(effective_sample_size(lw).item() for lw in groups)


class NoSupport(ValueError):
    """Every sample of some prompt has zero target weight: nothing to estimate from."""
