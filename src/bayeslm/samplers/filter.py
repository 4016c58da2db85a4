"""Filtering by the constraints: the sampler of guaranteed generation (GUARD: Kim, Thonet, Rozen, Lee, Jung &
Dymetman, ICLR 2025).

When to use it: a target made only of hard constraints, g(x|c) = π0(x|c)·b(x)/Z(c), and a proposal a′ trained
towards it (`bayeslm guard` trains one with DPG). Draw x ~ a′ and keep it when b(x) holds; what is kept follows

    g′(x|c) = a′(x|c)·b(x) / AR(c),      AR(c) = E_a′[b]  the acceptance rate,
    KL(g‖g′) = KL(g‖a′) + log AR(c).

Every kept sample satisfies b. With the prior as proposal, g′ = g exactly (rejection sampling with M = 1, and
AR = Z); with any other proposal, g′ is off from g by KL(g‖g′), which the draws estimate from the kept samples
themselves: on them b = 1 and w′ = π0/a′ ∝ g/g′, so KL(g‖g′) = E_g[log w′] − log E_g′[w′] by self-normalised
importance sampling (on the same proposals, exactly KL̂(g‖a′) + log AR̂). The forward KL bounds both figures:
KL(g‖g′) ≤ KL(g‖a′) since AR ≤ 1, and AR = E_g[a′/g] ≥ exp(−KL(g‖a′)) by Jensen's inequality, so a proposal
trained to minimise KL(g‖a′) (DPG) is both faithful and accepting. IMH or QRS from the same proposal remove the
remaining distortion, at a cost (`bayeslm.samplers.imh`, `bayeslm.samplers.qrs`).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from bayeslm import weights
from bayeslm.config import positive
from bayeslm.distributions.lm import LM
from bayeslm.modelling.potentials import only_constraints
from bayeslm.modelling.target import Target
from bayeslm.samplers.base import Option, sampler
from bayeslm.samplers.rejection import accept_reject
from bayeslm.samplers.result import Draws


@sampler("filter", """Keep the proposals that satisfy the constraints (GUARD): exact from the prior, faithful from a
    trained proposal, with KL(g‖g′) measured.""")
def filtered(target: Target, proposal: LM | None = None, n: int = 256, *,
             budget: Annotated[int | None, Option("most proposals per prompt (null: 100·n); what was accepted is "
                                                  "kept", positive)] = None,
             seed: int = 0) -> Draws:
    """n samples per prompt of g′ ∝ q·b: the proposal's samples that satisfy the target's constraints, with
    KL(g‖g′) estimated from them (`figures["kl_target_filtered"]`). `budget` caps the proposals per prompt
    (default 100·n)."""
    only_constraints(target.potential, "filter")
    proposal = proposal or target.prior
    draws = accept_reject("filter", target, proposal, n, _satisfied, budget=budget, seed=seed)
    kept = draws.samples
    log_w = kept.log_prior - kept.log_proposal  # log π0/q, ∝ g/g′ where b holds
    groups = [log_w[kept.prompt_index == c] for c in range(len(kept.prompts))]
    groups = [g for g in groups if len(g)]  # a prompt that kept nothing is refused by `bl.sample`
    per_prompt = [weights.forward_kl(g) for g in groups]
    kl = weights.combine([value for value, _ in per_prompt], [influence for _, influence in per_prompt])
    draws.figures["kl_target_filtered"] = weights.Estimate(kl.value, kl.stderr,
                                                           weights.heaviest_tail(groups, kept.prompts)[1])
    if not proposal.same_distribution(target.prior):
        draws.notes.append("the samples follow g′ ∝ q·b, the proposal cut to the constraints, not the target g ∝ "
                           "π0·b itself: kl_target_filtered says how far (0 for the prior as proposal)")
    return draws


def _satisfied(pool) -> torch.Tensor:
    """log of the acceptance probability: 0 where every constraint holds, −inf elsewhere."""
    return torch.where(torch.isfinite(pool.log_phi), 0.0, -math.inf).double()
