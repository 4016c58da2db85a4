"""How good a proposal is for guaranteed generation (GUARD: Kim, Thonet, Rozen, Lee, Jung & Dymetman, ICLR
2025).

For a target made only of hard constraints, g(x|c) = π0(x|c)·b(x)/Z(c), filtering a proposal a′ by b samples
g′ = a′·b/AR (`bayeslm.samplers.filter`). What that is worth is two figures, tied by one identity:

    AR(c)      = E_a′[b]                          the acceptance rate: the cost, 1/AR proposals a sample
    KL(g‖g′)   = KL(g‖a′) + log AR                the fidelity: 0 for the prior as proposal (then AR = Z)

From n samples x_i ~ a′ per prompt, with w_i = π0(x_i)·b(x_i)/a′(x_i):

    AR̂ = mean_i b(x_i),    KL̂(g‖a′) = the scorecard's E_π*[log w] − log Ẑ,    KL̂(g‖g′) = KL̂(g‖a′) + log AR̂,

each with a delta-method standard error (the sum's from the summed influences, as both terms share the samples),
and the KLs marked unreliable when the weights' tail is (`bayeslm.weights.pareto_k`). `exact` computes the three
by enumeration on toy priors, KL(g‖g′) straight from g′ rather than through the identity, so that a test can
check the identity and the estimates against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bayeslm import weights
from bayeslm.distributions.lm import LM
from bayeslm.measurement.exact import Exact
from bayeslm.measurement.scorecard import pool
from bayeslm.modelling.potentials import only_constraints
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.weights import Estimate, combine

# The figures, in the order tables show them.
FIGURES = [("acceptance", "acceptance AR"), ("kl_target_proposal", "KL(g‖a′)"),
           ("kl_target_filtered", "KL(g‖g′)")]


@dataclass
class Guarded:
    """A proposal's figures for filtering by the target's constraints: estimates, and exact values on toys."""

    proposal: str
    n: int  # samples per prompt behind the estimates
    estimates: dict[str, Estimate]
    exact: dict[str, float] | None = None

    def __getitem__(self, key: str) -> Estimate:
        return self.estimates[key]

    def to_json(self) -> dict:
        out = {"proposal": self.proposal, "n": self.n, **{k: e.to_json() for k, e in self.estimates.items()}}
        if self.exact is not None:
            out["exact"] = self.exact
        return out


def guarded(model: LM, target: Target, n: int = 256, *, seed: int = 0, exact: Exact | None = None) -> Guarded:
    """The figures of `model` as the proposal filtered by `target`'s constraints, from n of its samples per prompt
    (and exactly, given the target's enumeration `exact`)."""
    only_constraints(target.potential, "guard")
    model.check_compatible(target.prior)
    samples = model.sample(target.prompts, n, target.max_new_tokens, seed=seed)
    result = measure(pool(model, target, samples, analytic_kl=False))
    if exact is not None:
        result.exact = exact_figures(exact, model)
    return result


def measure(pooled: ScoredSamples) -> Guarded:
    """The figures from samples of one proposal, grouped by prompt with n of each."""
    log_w = pooled.grid(pooled.log_w)
    satisfied = torch.isfinite(pooled.grid(pooled.log_phi)).double()
    acceptance = satisfied.mean(1)
    pooled.require_support(pooled.proposal, "The acceptance rate is too small to measure: draw more samples (-n)")
    kl, kl_influence = weights.forward_kl(log_w)
    log_acceptance_influence = satisfied / acceptance[:, None] - 1  # of log AR̂: (b − AR)/AR
    _, warning = weights.heaviest_tail(log_w, pooled.prompts)
    estimates = {
        "acceptance": combine(acceptance, satisfied - acceptance[:, None]),
        "kl_target_proposal": combine(kl, kl_influence),
        "kl_target_filtered": combine(kl + acceptance.log(), kl_influence + log_acceptance_influence),
    }
    for key in ("kl_target_proposal", "kl_target_filtered"):
        estimates[key] = Estimate(estimates[key].value, estimates[key].stderr, warning)
    return Guarded(pooled.proposal, log_w.shape[1], estimates)


def exact_figures(exact: Exact, model: LM) -> dict[str, float]:
    """The exact figures of `model` as the proposal (means over prompts), KL(g‖g′) computed from g′ itself."""
    log_q = exact.log_probs(model)
    satisfied = torch.isfinite(exact.log_target)
    log_acceptance = torch.logsumexp(log_q.masked_fill(~satisfied, -torch.inf), 1)  # [C]
    log_filtered = (log_q - log_acceptance[:, None]).masked_fill(~satisfied, -torch.inf)  # log g′
    g = exact.log_posterior.exp()

    def kl_from_g(log_other):  # Σ_x g(x)·(log g(x) − log other(x)), with 0·anything = 0
        return torch.where(g > 0, g * (exact.log_posterior - log_other), 0.0).sum(1)

    return {"acceptance": log_acceptance.exp().mean().item(), "log_acceptance": log_acceptance.mean().item(),
            "kl_target_proposal": kl_from_g(log_q).mean().item(),
            "kl_target_filtered": kl_from_g(log_filtered).mean().item()}
