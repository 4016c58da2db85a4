"""Rejection sampling: exact samples of π*, whenever a bound M ≥ P(x)/q(x) on the weights is known.

When to use it: the target is close enough to the proposal that the acceptance rate Z/M is tolerable, and
exactness matters. Draw x ~ q and accept it with probability

    P(x) / (M·q(x)) = w(x) / M;

accepted samples are independent draws from π*, and the acceptance rate estimates Z/M. Bounds that are known:

    constraint target, prior as proposal:    w = 1[b(x)] ≤ 1,        M = 1
    exp(r/β) with r ≤ r_max, prior proposal: w = exp(r/β),           M = exp(r_max/β)

With any other proposal or potential, give log M yourself. A bound that a sample exceeds is not a bound (the
samples would not follow π*), so that is an error, as is asking for rejection sampling with no bound at all:
`qrs` is the sampler for when none is known.

`accept_reject` is the loop rejection and quasi-rejection sampling share: proposals are drawn in rounds, sized
from the acceptance seen so far, until every prompt has n accepted samples or has spent its budget; it then
keeps, per prompt, the first n accepted.
"""

from __future__ import annotations

import math
from typing import Annotated, Callable

import torch
import torch.nn.functional as F

from bayeslm import progress, weights
from bayeslm.config import positive
from bayeslm.distributions.lm import LM
from bayeslm.modelling.potentials.base import factors
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.samplers.base import Option, sampler
from bayeslm.samplers.pool import generators, propose
from bayeslm.samplers.result import Draws, shortfall

ROUND_ROWS = 64  # at most this many model batches of proposals per round


class NoBound(ValueError):
    """Rejection sampling was asked for without a valid bound on the weights."""


def known_log_bound(target: Target, proposal: LM | None = None, reward_max: float | None = None) -> float:
    """log M for the cases where a bound follows from the target: the prior as proposal, and a potential
    whose factors each know a bound on log φ (`Potential.log_bound`: 0 for a constraint, r_max/β for a tempered
    reward at most `reward_max`)."""
    proposal = proposal or target.prior
    if not proposal.same_distribution(target.prior):
        raise NoBound(f"no bound on P/q is known for the proposal {proposal.name}, which is not the prior: give "
                      "log M (log_bound; --log-bound) with M ≥ max P(x)/q(x), or use quasi-rejection sampling (qrs)")
    log_m = 0.0
    for factor in factors(target.potential):
        bound = factor.log_bound(reward_max)
        if bound is None and reward_max is None and factor.tempered() is not None:
            raise NoBound(f"rejection sampling needs a bound on the reward of {factor!r}: give the largest "
                          "value the reward can take (reward_max; --reward-max on the command line), e.g. 1 for "
                          "keyword, sentiment and offensiveness, so that M = exp(reward_max/β); or give log M "
                          "directly (log_bound; --log-bound)")
        if bound is None:
            raise NoBound(f"no bound on the potential {factor!r} is known: give log M (log_bound; --log-bound) "
                          "with M ≥ max P(x)/q(x), or use quasi-rejection sampling (qrs)")
        log_m += bound
    return log_m


@sampler("rejection", "Exact rejection sampling, given a bound M ≥ P/q (derived for constraints and bounded rewards).")
def rejection(target: Target, proposal: LM | None = None, n: int = 256, *,
              log_bound: Annotated[float | None, Option("log M, with M ≥ max P(x)/q(x); null: derived where "
                                                        "known")] = None,
              reward_max: Annotated[float | None, Option("the largest reward value, so that M = exp(reward_max/β) "
                                                         "(prior as proposal)")] = None,
              budget: Annotated[int | None, Option("most proposals per prompt (null: 100·n); what was accepted is "
                                                   "kept", positive)] = None,
              seed: int = 0) -> Draws:
    """n exact samples of π* per prompt. `log_bound` is log M; when None it is derived by `known_log_bound`
    (with `reward_max`). `budget` caps the proposals per prompt (default 100·n)."""
    proposal = proposal or target.prior
    if log_bound is None:
        log_bound = known_log_bound(target, proposal, reward_max)

    def log_accept(pool: ScoredSamples) -> torch.Tensor:
        excess = pool.log_w - log_bound
        worst = int(excess.argmax())
        if excess[worst] > 1e-4:  # beyond the float noise between sampling and scoring log-probabilities
            raise ValueError(f"the bound log M = {log_bound:.4g} is not a bound: the sample {pool.texts[worst]!r} "
                             f"has log P/q = {pool.log_w[worst].item():.4g}. Rejection sampling with it would not "
                             "follow the target; give a larger bound or use quasi-rejection sampling (qrs)")
        return excess.clamp(max=0)

    draws = accept_reject("rejection", target, proposal, n, log_accept, budget=budget, seed=seed)
    draws.figures["log_bound"] = log_bound
    return draws


def accept_reject(method: str, target: Target, proposal: LM, n: int,
                  log_accept: Callable[[ScoredSamples], torch.Tensor], *, budget: int | None, seed: int) -> Draws:
    """Draws proposals until each prompt has n samples accepted with probability exp(log_accept(pool)) or has
    spent `budget` proposals (default 100·n); keeps the first n accepted per prompt."""
    budget = budget or 100 * n
    C = len(target.prompts)
    draw, decide = generators(proposal, seed)
    spent = 0  # proposals so far for every prompt still active: all active prompts took part in every round
    accepted_count = torch.zeros(C, dtype=torch.long)
    expected = torch.zeros(C, dtype=torch.float64)  # Σ acceptance probabilities: a smoother rate estimate
    proposed = torch.zeros(C, dtype=torch.long)
    kept, kept_log_accept, log_w, prompt_index = [], [], [], []
    with progress.bar(C * n, method) as bar:
        while True:
            active = ((accepted_count < n) & (proposed < budget)).nonzero().flatten()
            if len(active) == 0:
                break
            # Enough proposals that the prompt with the lowest rate is likely done this round.
            rate = (expected[active] / max(spent, 1)).clamp(min=1 / (spent + 1))
            want = math.ceil(1.2 * ((n - accepted_count[active]).clamp(min=0) / rate).max().item())
            k = max(1, min(budget - spent, want, ROUND_ROWS * proposal.batch_size // len(active)))
            pool = propose(target, proposal, k, generator=draw, prompts=active.tolist())
            log_a = log_accept(pool)
            accept = torch.rand(len(pool), generator=decide, dtype=torch.float64).log() < log_a
            kept.append(pool.take(accept.nonzero().flatten()))
            kept_log_accept.append(log_a[accept])
            log_w.append(pool.log_w)
            prompt_index.append(pool.prompt_index)
            newly = torch.bincount(pool.prompt_index[accept], minlength=C)
            bar.update(int(torch.minimum(newly, (n - accepted_count).clamp(min=0)).sum()))
            accepted_count += newly
            expected += torch.zeros(C, dtype=torch.float64).index_add(0, pool.prompt_index, log_a.exp())
            proposed += torch.bincount(pool.prompt_index, minlength=C)
            spent += k
    accepted = ScoredSamples.cat(kept)
    first_n = _rank_within_prompt(accepted.prompt_index, C) < n
    order = torch.sort(accepted.prompt_index[first_n], stable=True).indices
    rows = first_n.nonzero().flatten()[order]
    log_w, prompt_index = torch.cat(log_w), torch.cat(prompt_index)
    estimate, per_prompt = weights.log_z([log_w[prompt_index == c] for c in range(C)], target.prompts)
    draws = Draws(method, accepted.take(rows), torch.zeros(len(rows), dtype=torch.float64), requested=n,
                  proposals=proposed, acceptance=torch.cat(kept_log_accept)[rows].exp(),
                  acceptance_rate=accepted_count.sum().item() / proposed.sum().item(), log_z=estimate,
                  log_z_per_prompt=per_prompt)
    return shortfall(draws, budget)


def _rank_within_prompt(prompt_index: torch.Tensor, C: int) -> torch.Tensor:
    """For each row, how many earlier rows share its prompt."""
    one_hot = F.one_hot(prompt_index, C)
    return (one_hot.cumsum(0) * one_hot).sum(1) - 1
