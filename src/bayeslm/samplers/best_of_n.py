"""Best-of-n: draw n candidates from the proposal and keep the one the potential likes best.

When to use it: as the named baseline. It is what a reward-model reranker does, and it is not a sampler of π*:
it keeps the candidate with the highest log φ (for an Exponential target, the highest reward, whatever β), so
it moves further from q than π* does for large β and not far enough for small β. Its distance from the
proposal has a well-known closed form,

    KL(best-of-n ‖ q) ≤ log n − (n − 1)/n,

exact for a continuous distribution of scores; sequences are discrete, which can only lower it (a discrete
outcome is a coarsening of the continuous case), as do ties (Beirami et al. 2024), so the reported figure is an
upper bound, close when no single sequence holds much of q's mass. Ties are broken by candidate order, which
for independent candidates is uniformly at random.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from bayeslm import weights
from bayeslm.config import positive
from bayeslm.distributions.lm import LM
from bayeslm.modelling.target import Target
from bayeslm.samplers.base import Option, sampler
from bayeslm.samplers.pool import generators, propose
from bayeslm.samplers.result import Draws


@sampler("best_of_n", "Best-of-n reranking by log φ: the named baseline, not a sampler of π*.",
         aliases=("best-of-n",))
def best_of_n(target: Target, proposal: LM | None = None, n: int = 256, *,
              candidates: Annotated[int, Option("candidates per sample", positive)] = 4,
              seed: int = 0) -> Draws:
    """n samples per prompt, each the best of `candidates` proposals by log φ."""
    proposal = proposal or target.prior
    draw, _ = generators(proposal, seed)
    pool = propose(target, proposal, n * candidates, generator=draw)
    C = len(target.prompts)
    score = pool.grid(target.potential.log_phi(pool.stats)).reshape(C, n, candidates)
    best = score.argmax(-1)  # the first of tied maxima
    rows = (best + candidates * torch.arange(C * n).reshape(C, n)).flatten()
    estimate, per_prompt = weights.log_z(pool.grid(pool.log_w), pool.prompts)
    return Draws("best_of_n", pool.take(rows), torch.zeros(len(rows), dtype=torch.float64), requested=n,
                 proposals=pool.counts(), log_z=estimate, log_z_per_prompt=per_prompt,
                 figures={"candidates": float(candidates), "kl_proposal_bound": kl_to_proposal(candidates)})


def kl_to_proposal(candidates: int) -> float:
    """The closed-form KL(best-of-n ‖ q) in nats: exact for continuous scores, an upper bound for sequences."""
    return math.log(candidates) - (candidates - 1) / candidates
