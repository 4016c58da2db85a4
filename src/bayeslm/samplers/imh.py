"""Independent Metropolis–Hastings (IMH): a Markov chain whose proposals ignore the current state.

When to use it: unweighted samples are needed, no bound on P/q is known, and an approximation that improves
with chain length is acceptable. From the current state x, propose x' ~ q and move there with probability

    min(1, w(x') / w(x)),      w = P/q;

the chain leaves π* invariant and converges to it geometrically when w is bounded (at rate 1 − Z/max w; Mengersen
& Tweedie 1996). Since proposals do not depend on the state, all of them are drawn up front in one batch, and
`chains` chains per prompt advance together. The first state of each chain is its first proposal; the first
`burn_in` moves are discarded. Consecutive states repeat whenever a move is rejected, so the summary reports
the acceptance rate, the autocorrelation of log P(x) along the chains (the usual MCMC trace), and the effective
sample size that follows from it. The proposals also give the importance-sampling estimate of log Z.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from bayeslm import progress, weights
from bayeslm.config import non_negative, positive
from bayeslm.distributions.lm import LM
from bayeslm.modelling.target import Target
from bayeslm.samplers.base import Option, sampler
from bayeslm.samplers.pool import generators, propose, require_support
from bayeslm.samplers.result import Draws

MAX_LAG = 10


@sampler("imh", "Independent Metropolis–Hastings chains with the proposal as independent proposal.")
def imh(target: Target, proposal: LM | None = None, n: int = 256, *,
        chains: Annotated[int | None, Option("chains per prompt (null: min(n, 16))", positive)] = None,
        burn_in: Annotated[int, Option("moves discarded per chain", non_negative)] = 20,
        seed: int = 0) -> Draws:
    """n samples per prompt from `chains` chains per prompt (default min(n, 16)), each run for `burn_in` moves
    plus ⌈n/chains⌉ kept moves."""
    proposal = proposal or target.prior
    chains = chains or min(n, 16)
    kept = math.ceil(n / chains)
    steps = 1 + burn_in + kept  # one proposal starts each chain, one more per move
    C = len(target.prompts)
    draw, decide = generators(proposal, seed)
    pool = propose(target, proposal, chains * steps, generator=draw)
    require_support(pool, "IMH")
    log_w = pool.grid(pool.log_w).reshape(C, chains, steps)
    state = torch.zeros(C, chains, dtype=torch.long)  # position along the steps of the current state's proposal
    current = log_w[..., 0]
    states, accepted = [], []
    with progress.bar(steps - 1, "IMH", unit="move") as bar:
        for t in range(1, steps):
            candidate = log_w[..., t]
            # From a zero-weight state every move is accepted (the ratio is +inf); NaN (0/0) is a rejection.
            accept = torch.rand(C, chains, generator=decide, dtype=torch.float64).log() < candidate - current
            state = torch.where(accept, t, state)
            current = torch.where(accept, candidate, current)
            if t > burn_in:
                states.append(state)
                accepted.append(accept)
            bar.update()
    states, accepted = torch.stack(states, -1), torch.stack(accepted, -1)  # [C, chains, kept]
    rows = states + (torch.arange(C * chains) * steps).reshape(C, chains, 1)
    trace = pool.log_target[rows]  # log P along each chain: the usual MCMC trace
    # Time-major order, so that n below chains·kept is taken evenly from the chains.
    rows = rows.transpose(1, 2).reshape(C, -1)[:, :n].flatten()
    samples = pool.take(rows)
    estimate, per_prompt = weights.log_z(pool.grid(pool.log_w), pool.prompts)
    return chain_draws("imh", samples, trace, accepted, kept, requested=n, proposals=pool.counts(),
                       log_z=estimate, log_z_per_prompt=per_prompt)


def chain_draws(method: str, samples, trace: torch.Tensor, accepted: torch.Tensor, kept: int, **figures) -> Draws:
    """The kept states of Markov chains as `Draws`: unweighted, with the acceptance rate, the autocorrelation of
    the trace [C, chains, kept] (log P along each chain), the effective sample size it implies, and a note when
    some kept state still has zero target weight."""
    rho = autocorrelation(trace)
    draws = Draws(method, samples, torch.zeros(len(samples), dtype=torch.float64),
                  acceptance_rate=accepted.double().mean().item(),
                  figures={"autocorrelation": rho} if rho else {}, **figures)
    if kept == 1:
        draws.ess = float(len(samples))  # one state per chain, and the chains are independent
    elif rho and all(math.isfinite(r) for r in rho):
        draws.ess = len(samples) / integrated_time(rho)
    zero = int(torch.isneginf(samples.log_target).sum())
    if zero:
        draws.notes.append(f"{zero} samples have zero target weight: their chains had not reached the target's "
                           "support; raise burn_in")
    return draws


def autocorrelation(trace: torch.Tensor) -> list[float]:
    """Autocorrelation of trace [C, chains, T] at lags 1..min(T−1, MAX_LAG), per prompt (over its chains)
    then averaged over prompts; NaN where the trace is constant or infinite."""
    T = trace.shape[-1]
    centred = trace - trace.mean((1, 2), keepdim=True)
    variance = (centred ** 2).mean((1, 2))  # [C]
    usable = torch.isfinite(variance) & (variance > 0)
    if not usable.any():
        return [math.nan] * min(T - 1, MAX_LAG)
    centred, variance = centred[usable], variance[usable]
    return [((centred[..., :-k] * centred[..., k:]).mean((1, 2)) / variance).mean().item()
            for k in range(1, min(T - 1, MAX_LAG) + 1)]


def integrated_time(autocorrelation: list[float]) -> float:
    """τ = 1 + 2 Σ_k ρ_k, summed up to the first non-positive ρ_k (Geyer's initial positive sequence, simplified);
    the chains hold as much information as n/τ independent samples."""
    tau = 1.0
    for rho in autocorrelation:
        if rho <= 0:
            break
        tau += 2 * rho
    return tau
