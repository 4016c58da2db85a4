"""Quasi-rejection sampling (QRS; Eikema, Kruszewski, Dance, Aziz & Dymetman 2022): rejection sampling with a
guessed bound β, trading exactness for acceptance, with the trade-off measured before sampling.

When to use it: no bound on P/q is known, or the exact bound accepts too rarely. Draw x ~ q and accept it with
probability min(1, P(x)/(β·q(x))) = min(1, w(x)/β). The accepted samples follow

    p_β(x) = q(x)·min(1, w(x)/β) / a(β),      a(β) = E_q[min(1, w/β)]   the acceptance rate,

which equals π* once β ≥ max w (then QRS is rejection sampling) and moves towards q as β shrinks. With
ρ = w/Z and γ = min(1, w/β)/a (both mean 1 under q), the distances to the target are expectations under q,

    TV(p_β, π*)  = ½ E_q|γ − ρ|
    KL(π*‖p_β)   = E_q[ρ (log ρ − log γ)]
    KL(p_β‖π*)   = E_q[γ (log γ − log ρ)]

so one pool of proposals estimates all of them for every β (`tradeoff`, the divergence diagnostics of Eikema
et al.), with delta-method standard errors in which Z and a(β) are themselves estimated from the pool. Pick β
from that table, then sample with `qrs`; or state what you need and let `choose_beta` pick it from the table:
the largest β (the closest to π*) whose acceptance rate is at least `acceptance`, or the smallest β (the most
accepting) whose TV to π* is at most `tv`. Both a(β) and TV(β) fall as β grows. The pool only knows the weights it
drew: for β above every pooled weight it reports TV = 0, though a rarer sequence with a larger weight may exist, so
take a generous pool. β here is QRS's bound on w, not the β of an Exponential potential.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Sequence

import torch

from bayeslm.config import fraction, positive
from bayeslm.distributions.lm import LM
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.samplers.base import Option, sampler
from bayeslm.samplers.pool import generators, propose, require_support
from bayeslm.samplers.rejection import accept_reject
from bayeslm.samplers.result import Draws
from bayeslm.weights import Estimate, combine, log_mean_exp

DEFAULT_BETAS = 6  # log-spaced from the median pooled weight to the largest


def qrs(target: Target, proposal: LM | None = None, n: int = 256, *, qrs_beta: float, budget: int | None = None,
        seed: int = 0) -> Draws:
    """n samples per prompt of p_β, β = `qrs_beta`; `budget` caps the proposals per prompt (default 100·n)."""
    if not qrs_beta > 0:
        raise ValueError(f"the QRS bound qrs_beta must be > 0, got {qrs_beta}")
    log_beta = math.log(qrs_beta)
    draws = accept_reject("qrs", target, proposal or target.prior, n,
                          lambda pool: (pool.log_w - log_beta).clamp(max=0), budget=budget, seed=seed)
    draws.figures["qrs_beta"] = qrs_beta
    return draws


@dataclass(frozen=True)
class Tradeoff:
    """What QRS with bound β would give, estimated from a pool of proposals (means over prompts)."""

    beta: float
    acceptance_rate: Estimate
    tv_qrs_target: Estimate
    kl_target_qrs: Estimate
    kl_qrs_target: Estimate

    def to_json(self) -> dict:
        return {"beta": self.beta, **{k: getattr(self, k).to_json() for k in
                                      ("acceptance_rate", "tv_qrs_target", "kl_target_qrs", "kl_qrs_target")}}


def tradeoff(target: Target, proposal: LM | None = None, betas: Sequence[float] | None = None, n: int = 1024, *,
             seed: int = 0, pool: ScoredSamples | None = None) -> list[Tradeoff]:
    """The QRS trade-off for each β, from n proposals per prompt (or a given `pool`, n per prompt). Without
    `betas`, β runs log-spaced from the median of the pool's positive weights to their maximum (where QRS is
    exact rejection sampling as far as the pool can tell)."""
    if pool is None:
        proposal = proposal or target.prior
        pool = propose(target, proposal, n, generator=generators(proposal, seed)[0])
    require_support(pool, "QRS")
    log_w = pool.grid(pool.log_w)  # [C, n]
    if betas is None:
        finite = log_w[torch.isfinite(log_w)]
        low, high = finite.median().item(), finite.max().item()
        betas = sorted(set(torch.linspace(low, high, DEFAULT_BETAS, dtype=torch.float64).exp().tolist()))
    return [_at(log_w, float(beta)) for beta in betas]


def _at(log_w: torch.Tensor, beta: float) -> Tradeoff:
    per_prompt = {k: ([], []) for k in ("acceptance_rate", "tv_qrs_target", "kl_target_qrs", "kl_qrs_target")}

    def add(key, value, influence):
        per_prompt[key][0].append(value.item())
        per_prompt[key][1].append(influence)

    for lw in log_w:
        log_z = log_mean_exp(lw)
        rho = torch.exp(lw - log_z)
        log_g = (lw - math.log(beta)).clamp(max=0)  # log min(1, w/β)
        log_a = log_mean_exp(log_g)
        gamma = torch.exp(log_g - log_a)
        add("acceptance_rate", log_a.exp(), log_a.exp() * (gamma - 1))
        # TV: h = ½|γ − ρ|; the two correction terms are the influence of the estimated a and Z.
        h, sign = 0.5 * (gamma - rho).abs(), torch.sign(gamma - rho)
        tv = h.mean()
        add("tv_qrs_target", tv, h - tv - 0.5 * (sign * gamma).mean() * (gamma - 1)
            + 0.5 * (sign * rho).mean() * (rho - 1))
        # γ > 0 exactly where ρ > 0, so the logs below are finite wherever they are weighted.
        log_ratio = torch.where(rho > 0, torch.log(rho) - torch.log(gamma), torch.zeros(()).double())
        for key, outer, inner, sign_ in (("kl_target_qrs", rho, gamma, 1.0), ("kl_qrs_target", gamma, rho, -1.0)):
            h = outer * sign_ * log_ratio
            kl = h.mean()
            add(key, kl, h - kl - (kl + 1) * (outer - 1) + (inner - 1))
    return Tradeoff(beta, *(combine(values, influences) for values, influences in per_prompt.values()))


CHOICE_GRID = 200  # βs tried by `choose_beta`, log-spaced over the pooled positive weights


def choose_beta(target: Target, proposal: LM | None = None, *, acceptance: float | None = None,
                tv: float | None = None, pool_n: int = 1024, seed: int = 0) -> Tradeoff:
    """The trade-off row of the β that meets the stated `acceptance` (the largest β with a(β) ≥ acceptance) or
    `tv` (the smallest β with TV(p_β, π*) ≤ tv), from `pool_n` proposals per prompt. Raises ValueError when no β
    meets it, naming the closest one."""
    if (acceptance is None) == (tv is None):
        raise ValueError("give one of acceptance and tv")
    proposal = proposal or target.prior
    pool = propose(target, proposal, pool_n, generator=generators(proposal, seed + 7_919)[0])
    require_support(pool, "QRS")
    finite = pool.log_w[torch.isfinite(pool.log_w)]
    grid = torch.linspace(finite.min().item(), finite.max().item(), CHOICE_GRID, dtype=torch.float64).exp()
    rows = tradeoff(target, betas=sorted(set(grid.tolist())), pool=pool)
    if acceptance is not None:
        meeting = [row for row in rows if row.acceptance_rate.value >= acceptance]
        if not meeting:
            raise ValueError(f"no β reaches an acceptance rate of {acceptance}: the most accepting β "
                             f"{rows[0].beta:.4g} accepts {rows[0].acceptance_rate.value:.4g} of the proposals "
                             "(a proposal closer to the target accepts more)")
        return meeting[-1]
    meeting = [row for row in rows if row.tv_qrs_target.value <= tv]
    if not meeting:
        raise ValueError(f"no β brings TV(p_β, π*) to {tv} or below as far as a pool of {pool_n} proposals per "
                         f"prompt can tell: the closest β {rows[-1].beta:.4g} has TV "
                         f"{rows[-1].tv_qrs_target.value:.4g}")
    return meeting[0]


def _one_way(options) -> str | None:
    if sum(x is not None for x in (options.qrs_beta, options.acceptance, options.tv)) != 1:
        return ("needs exactly one of qrs_beta (--qrs-beta: the bound β itself), acceptance (--acceptance: the rate "
                "you can afford, e.g. 0.1) or tv (--tv: the distance to the target you accept, e.g. 0.05)")
    return None


@sampler("qrs", "Quasi-rejection sampling with a bound β on P/q: given, or chosen for a stated acceptance rate or TV.",
         check=_one_way)
def quasi_rejection(target: Target, proposal: LM | None = None, n: int = 256, *,
                    qrs_beta: Annotated[float | None, Option("the bound β on P/q (not the β of an exponential "
                                                             "potential); or give acceptance or tv and let it be "
                                                             "chosen", positive)] = None,
                    acceptance: Annotated[float | None, Option("choose β as the closest to the target that accepts "
                                                               "at least this fraction of proposals", fraction)] = None,
                    tv: Annotated[float | None, Option("choose β as the most accepting whose TV distance to the "
                                                       "target is at most this", fraction)] = None,
                    choice_pool: Annotated[int, Option("proposals per prompt from which acceptance or tv chooses β",
                                                       positive)] = 1024,
                    budget: Annotated[int | None, Option("most proposals per prompt (null: 100·n); what was "
                                                         "accepted is kept", positive)] = None,
                    seed: int = 0) -> Draws:
    """QRS with the bound `qrs_beta`, or with the β that `choose_beta` picks for `acceptance` or `tv` from
    `choice_pool` proposals per prompt (its predictions kept in the figures)."""
    if qrs_beta is not None:
        return qrs(target, proposal, n, qrs_beta=qrs_beta, budget=budget, seed=seed)
    chosen = choose_beta(target, proposal, acceptance=acceptance, tv=tv, pool_n=choice_pool, seed=seed)
    draws = qrs(target, proposal, n, qrs_beta=chosen.beta, budget=budget, seed=seed)
    goal = f"acceptance ≥ {acceptance}" if acceptance is not None else f"TV ≤ {tv}"
    draws.figures.update(predicted_acceptance=chosen.acceptance_rate.value, predicted_tv=chosen.tv_qrs_target.value)
    draws.notes.append(f"β = {chosen.beta:.4g} chosen for {goal} from {choice_pool} proposals per prompt: predicted "
                       f"acceptance {chosen.acceptance_rate}, TV to the target {chosen.tv_qrs_target}, KL(π*‖p_β) "
                       f"{chosen.kl_target_qrs}")
    return draws
