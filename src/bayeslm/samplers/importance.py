"""Importance sampling and sampling–importance–resampling (SIR): draw from the proposal, then weigh.

When to use them: always as the first look, since they need nothing but proposals and give log Z and the
effective sample size for free; IS when weighted samples will do (estimating E_π*[f] by self-normalised IS),
SIR when unweighted samples are needed. Both are only as good as the ESS: when the proposal is far from the
target, a few samples carry all the weight.

    importance:  x_i ~ q,  log w_i = log P(x_i) − log q(x_i);  E_π*[f] ≈ Σ_i w_i f(x_i) / Σ_i w_i
    SIR:         a pool of M samples x_i ~ q, then n draws from it with probability w_i / Σ_j w_j

SIR's samples follow π* as M → ∞ (their law is the SNIS approximation, off by O(1/M)); draws from one pool
repeat its samples, so keep M well above n (by default M = 10·n). `ancestral` returns the proposal's samples
uncorrected, the baseline both improve on.
"""

from __future__ import annotations

from typing import Annotated

import torch

from bayeslm import weights
from bayeslm.config import positive
from bayeslm.distributions.lm import LM
from bayeslm.modelling.target import Target
from bayeslm.samplers.base import Option, sampler
from bayeslm.samplers.pool import generators, propose, require_support
from bayeslm.samplers.result import Draws


@sampler("ancestral", "The proposal's own samples, unweighted: the baseline (with log Z and the ESS of their weights).")
def ancestral(target: Target, proposal: LM | None = None, n: int = 256, *, seed: int = 0) -> Draws:
    """n samples per prompt of the proposal (default the prior), unweighted; log Z and the ESS of their
    importance weights say how far the proposal is from the target."""
    return _weighted("ancestral", target, proposal, n, seed, keep_weights=False)


@sampler("importance", "The proposal's samples, each weighted by w = P/q.")
def importance(target: Target, proposal: LM | None = None, n: int = 256, *, seed: int = 0) -> Draws:
    """n samples per prompt of the proposal, each weighted by w = P/q (`log_weight`)."""
    return _weighted("importance", target, proposal, n, seed, keep_weights=True)


def _weighted(method, target, proposal, n, seed, keep_weights):
    proposal = proposal or target.prior
    draw, _ = generators(proposal, seed)
    pool = propose(target, proposal, n, generator=draw)
    if keep_weights:
        require_support(pool, method)
    estimate, per_prompt = weights.log_z(pool.grid(pool.log_w), pool.prompts)
    log_weight = pool.log_w if keep_weights else torch.zeros(len(pool), dtype=torch.float64)
    return Draws(method, pool, log_weight, requested=n, proposals=pool.counts(),
                 ess=weights.total_ess(pool.grid(pool.log_w)), log_z=estimate, log_z_per_prompt=per_prompt)


@sampler("sir", "Sampling–importance–resampling: n draws from a weighted pool of proposals.")
def sir(target: Target, proposal: LM | None = None, n: int = 256, *,
        pool_size: Annotated[int | None, Option("proposals per prompt to resample from (null: 10·n)",
                                                positive)] = None,
        seed: int = 0) -> Draws:
    """n unweighted samples per prompt, resampled with replacement from a pool of `pool_size` (default 10·n)
    proposals per prompt in proportion to their weights."""
    proposal = proposal or target.prior
    pool_size = pool_size or 10 * n
    draw, decide = generators(proposal, seed)
    pool = propose(target, proposal, pool_size, generator=draw)
    require_support(pool, "SIR")
    C = len(target.prompts)
    probabilities = torch.softmax(pool.grid(pool.log_w), 1)  # [C, M]
    picked = torch.multinomial(probabilities, n, replacement=True, generator=decide)  # [C, n]
    rows = (picked + pool_size * torch.arange(C)[:, None]).flatten()
    estimate, per_prompt = weights.log_z(pool.grid(pool.log_w), pool.prompts)
    return Draws("sir", pool.take(rows), torch.zeros(C * n, dtype=torch.float64), requested=n,
                 proposals=pool.counts(), ess=weights.total_ess(pool.grid(pool.log_w)), log_z=estimate,
                 log_z_per_prompt=per_prompt, figures={"distinct_samples": float(len(set(rows.tolist())))})
