"""Score-function (REINFORCE) pieces shared by the on-policy objectives."""

from __future__ import annotations

import torch


def leave_one_out(values: torch.Tensor, group: int) -> torch.Tensor:
    """For each sample, the mean of the other samples of its prompt: a baseline independent of the sample
    itself, so subtracting it leaves the gradient unbiased (Kool et al. 2019, "Buy 4 REINFORCE samples"). values:
    [B] or [B, L] (then per position)."""
    grouped = values.reshape(-1, group, *values.shape[1:])
    return ((grouped.sum(1, keepdim=True) - grouped) / (group - 1)).reshape(values.shape)


def surrogate(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Σ_t ρ_t·A_t per sample, ρ_t = π_θ(x_t|x<t)/π_old(x_t|x<t); with `clip`, PPO's pessimistic
    min(ρA, clip(ρ, 1−ε, 1+ε)A) (Schulman et al. 2017, eq. 7).

    At the first pass ρ = 1 and the gradient is exactly REINFORCE's A·∇log π; further passes over the same
    batch (PPO epochs) reuse it off-policy through ρ. advantages: [B, L] (or [B, 1]).
    """
    ratio = torch.exp(log_probs - old_log_probs)
    terms = ratio * advantages
    if clip is not None:
        terms = torch.minimum(terms, ratio.clamp(1 - clip, 1 + clip) * advantages)
    return torch.where(mask, terms, torch.zeros((), device=terms.device)).sum(-1)
