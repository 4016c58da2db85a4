"""The Bayesian scorecard: how close a model q is to a target π* = π0·φ/Z, estimated from samples of q.

With log-weights log w(x) = log P(x) − log q(x), P = π0·φ the unnormalised target, and n samples per prompt:

    log Z        = log E_q[w]                          importance sampling
    ELBO         = E_q[log w]            ≤ log Z
    EUBO         = E_π*[log w]           ≥ log Z        self-normalised importance sampling (SNIS)
    KL(q‖π*)     = log Z − ELBO
    KL(π*‖q)     = EUBO − log Z
    TV(q, π*)    = ½ E_q|1 − w/Z|
    KL(q‖π0)     = E_q Σ_t KL(q(·|x<t) ‖ π0(·|x<t))    per-token analytic, never negative
    H(q)         = −E_q[log q]

Every estimate carries a standard error from its influence function (the delta method for ratios and logs).
Each figure is computed per prompt and averaged over prompts. All weights stay in log space.

Against a `Reference` of the target (`bayeslm.measurement.reference`), log Z, EUBO, KL(π*‖q) and statistics under
π* come from the reference's samples instead, the same for every model, and KL(q‖π*) = log Z_ref − ELBO_q
weighs nothing by q: q's own log Ẑ stays beside them as `log_z_model`, a diagnostic (below log Z_ref by more than
3 standard errors: q misses part of π*'s mass). TV(q, π*) = E_q[(1 − r)₊], r = P/(Z_ref·q), is a bounded mean.
Without a reference every figure comes from q's own samples (what per-step training figures do).

Where a verifier judges the samples (the target's hard constraints, or one given), the card adds pass@k for
k = 1, 2, 4, … n and the number of distinct correct answers a prompt (`bayeslm.measurement.pass_at_k`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from bayeslm import weights
from bayeslm.distributions.lm import LM, Samples
from bayeslm.measurement.diversity import distinct_n, self_bleu
from bayeslm.measurement.pass_at_k import distinct_correct, pass_at_k_curve, verdicts
from bayeslm.modelling.rewards import Reward
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.weights import Estimate, combine, difference, json_float, mean, snis_mean

if TYPE_CHECKING:
    from bayeslm.measurement.reference import Reference

# Every figure of a scorecard with its label, in the order tables show them (q: the model scored).
FIGURES = [("log_z", "log Z"), ("log_z_model", "log Ẑ from q"), ("elbo", "ELBO"), ("eubo", "EUBO"),
           ("kl_model_target", "KL(q‖π*)"), ("kl_target_model", "KL(π*‖q)"), ("tv_model_target", "TV(q,π*)"),
           ("kl_model_prior", "KL(q‖π0)"), ("kl_model_prior_sampled", "KL(q‖π0) sampled"),
           ("reward_mean", "reward under q"), ("target_reward_mean", "reward under π*"),
           ("entropy", "entropy H(q), nats")]
# The figures estimated with the importance weights w = P/q (the others are plain means under q).
IMPORTANCE_WEIGHTED = ("log_z", "log_z_model", "eubo", "kl_model_target", "kl_target_model", "tv_model_target")
# Below log Z_ref by more than this many standard errors, q's own log Ẑ says that q misses part of π*'s mass.
MISSED_MASS_SE = 3.0


@dataclass
class Scorecard:
    """Estimates of one model against one target (see the module docstring for each figure)."""

    model: str
    target: str
    n: int
    estimates: dict[str, Estimate]
    ess: float
    diversity: dict[str, float]
    statistics: dict[str, dict[str, Estimate]]
    pareto_k: float = math.nan  # the largest Pareto k̂ of the prompts' importance weights (`weights.pareto_k`)
    pareto_k_threshold: float = math.nan  # above it, the importance-weighted figures are marked unreliable
    exact: dict[str, float] | None = field(default=None)
    reference: dict | None = None  # the reference's own figures (`Reference.to_json`), where it was scored against one
    rewards: torch.Tensor | None = field(default=None, repr=False)  # per sample, [C, n] (not in the JSON)
    verifier: str | None = None  # what judged the samples correct, where anything did
    pass_at_k: dict[int, Estimate] = field(default_factory=dict)
    distinct_correct: float | None = None  # different correct answers a prompt

    def __getitem__(self, key: str) -> Estimate:
        return self.estimates[key]

    def __str__(self) -> str:
        """A table: each figure's estimate ± standard error (and its exact value, when known)."""
        exact = self.exact or {}
        rows = [(label, self.estimates[key], exact.get(key)) for key, label in FIGURES]
        for name, sides in (self.statistics.items() if len(self.statistics) > 1 else ()):
            for side, under in (("model", "q"), ("target", "π*")):
                rows.append((f"{name} under {under}", sides[side],
                             exact["statistics"][name][side] if exact else None))
        width = max(len(label) for label, _, _ in rows)
        ref = self.reference
        lines = [f"model  {self.model}", f"target {self.target}",
                 f"samples {self.n}, effective {self.ess:.1f}, Pareto k̂ {self.pareto_k:.2f} "
                 f"(threshold {self.pareto_k_threshold:.2f})",
                 _reference_line(ref), "",
                 f"{'':{width}s} {'estimate':>12s} {'± stderr':>10s}" + (f" {'exact':>10s}" if exact else "")]
        for label, est, exact_value in rows:
            lines.append(f"{label:{width}s} {est.value:12.4f} {est.stderr:10.4f}"
                         + (f" {exact_value:10.4f}" if exact_value is not None else "")
                         + ("  !" if est.unreliable else ""))
        warnings = sorted({est.unreliable for _, est, _ in rows if est.unreliable})
        lines += [f"! unreliable: {warning}" for warning in warnings]
        lines.append("")
        lines.append("diversity  " + "  ".join(f"{k} {v:.3f}" for k, v in self.diversity.items()))
        if self.verifier is not None:
            exact_pass = exact.get("pass_at_k", {})
            lines.append(f"pass@k     judged by {self.verifier}; {self.distinct_correct:.2f} distinct correct "
                         "answers a prompt")
            lines += [f"  pass@{k:<4d} {e.value:12.4f} {e.stderr:10.4f}"
                      + (f" {exact_pass[k]:10.4f}" if k in exact_pass else "") for k, e in self.pass_at_k.items()]
        return "\n".join(lines)

    def to_json(self) -> dict:
        out = {"model": self.model, "target": self.target, "n": self.n, "ess": self.ess,
               "pareto_k": json_float(self.pareto_k), "pareto_k_threshold": json_float(self.pareto_k_threshold)}
        out.update({k: e.to_json() for k, e in self.estimates.items()})
        out.update(self.diversity)
        out["statistics"] = {name: {side: e.to_json() for side, e in sides.items()}
                             for name, sides in self.statistics.items()}
        if self.verifier is not None:
            out["verifier"] = self.verifier
            out["pass_at_k"] = {str(k): e.to_json() for k, e in self.pass_at_k.items()}
            out["distinct_correct"] = self.distinct_correct
        if self.reference is not None:
            out["reference"] = self.reference
        if self.exact is not None:
            out["exact"] = {k: json_float(v) if isinstance(v, float) else v for k, v in self.exact.items()}
        return out


def _reference_line(ref: dict | None) -> str:
    if ref is None:
        return "every figure from q's own samples (no reference of the target)"
    if ref["exact"]:
        return f"log Z and π*: the exact reference (every one of {ref['n']} continuations a prompt)"
    return (f"log Z and π*: the reference ({ref['n']} samples of the {ref['source']} a prompt, Pareto k̂ "
            f"{ref['pareto_k'] if ref['pareto_k'] is not None else math.inf:.2f})")


def pool(model: LM, target: Target, samples: Samples, *, analytic_kl: bool = True) -> ScoredSamples:
    """Scores `samples`, drawn from `model`, under the target (and KL(model‖prior) per token, when analytic)."""
    model.check_compatible(target.prior)
    if samples.prompts != target.prompts or samples.tokens.shape[1] > target.max_new_tokens:
        raise ValueError("the samples were drawn for other prompts or a longer max_new_tokens than the target's; "
                         "draw them with model.sample(target.prompts, n, target.max_new_tokens)")
    scored = target.score_samples(samples, model)
    if analytic_kl and not model.same_distribution(target.prior):
        with torch.no_grad():
            scored.kl_prior = model.kl(target.prior, samples.sample_prompts, samples.continuations).double().cpu()
    return scored


def scorecard(model: LM, target: Target, n: int = 256, *, seed: int = 0, samples: Samples | None = None,
              analytic_kl: bool = True, reference: Reference | None = None, verifier: Reward | None = None
              ) -> Scorecard:
    """Samples n continuations per prompt from `model` (or uses `samples`, drawn from it) and scores them, against
    `reference` (`bl.reference(target)`) where given; pass@k judged by `verifier` where given, else by the
    target's hard constraints."""
    if samples is None:
        model.check_compatible(target.prior)
        samples = model.sample(target.prompts, n, target.max_new_tokens, seed=seed)
    return card(pool(model, target, samples, analytic_kl=analytic_kl), target, reference=reference, model=model,
                verifier=verifier)


def card(pooled: ScoredSamples, target: Target, *, reference: Reference | None = None, model: LM | None = None,
         verifier: Reward | None = None) -> Scorecard:
    """The scorecard of samples of one model q, grouped by prompt with n of each, against `target`; against its
    `reference` where given (then `model` is q, to score the reference's samples); pass@k judged by `verifier`
    where given, else by the target's hard constraints."""
    grid = pooled.grid
    log_q, log_prior, log_w = grid(pooled.log_proposal), grid(pooled.log_prior), grid(pooled.log_w)
    C, n = log_w.shape
    pooled.require_support(None, "Draw more samples (-n), or use a proposal closer to the target")
    log_z, ratio = weights.normalise(log_w)
    est = {"log_z": combine(log_z, ratio - 1)}
    est["log_z_model"] = est["log_z"]
    elbo = log_w.mean(1)
    est["elbo"] = combine(elbo, log_w - elbo[:, None])
    eubo, eubo_influence = snis_mean(log_w, ratio)
    est["eubo"] = combine(eubo, eubo_influence)
    est["kl_model_target"] = combine(log_z - elbo, (ratio - 1) - (log_w - elbo[:, None]))
    est["kl_target_model"] = combine(*weights.forward_kl(log_w))
    gap = 0.5 * (1 - ratio).abs()
    tv = gap.mean(1)
    # Ẑ is estimated too: d TV / d log Ẑ = E_q[r·1{r<1}] − ½, times log Ẑ's influence r − 1.
    below = torch.where(ratio < 1, ratio, torch.zeros(()).double()).mean(1)
    est["tv_model_target"] = combine(tv, gap - tv[:, None] + (below - 0.5)[:, None] * (ratio - 1))
    est["kl_model_prior"] = mean(grid(pooled.kl_prior) if pooled.kl_prior is not None else log_q - log_prior)
    est["kl_model_prior_sampled"] = mean(log_q - log_prior)
    statistics = {}
    for name, value in pooled.stats.items():
        statistics[name] = {"model": mean(grid(value)), "target": combine(*snis_mean(grid(value), ratio))}
    # Every figure that weighs by w = P/q (Ẑ included) is as trustworthy as the tail of the weights.
    k, warning = weights.heaviest_tail(log_w, pooled.prompts)
    if warning is not None:
        for key in IMPORTANCE_WEIGHTED:
            est[key] = replace(est[key], unreliable=warning)
        for sides in statistics.values():
            sides["target"] = replace(sides["target"], unreliable=warning)
    if reference is not None:
        _against(reference, model, target, est, statistics, log_w)
    est["reward_mean"] = statistics[target.reward_name]["model"]
    est["target_reward_mean"] = statistics[target.reward_name]["target"]
    est["entropy"] = mean(-log_q)
    texts = pooled.texts_by_prompt()
    diversity = {f"distinct_{k}": sum(distinct_n(g, k) for g in texts) / C for k in (1, 2, 3)}
    diversity["self_bleu"] = sum(self_bleu(g) for g in texts) / C
    result = Scorecard(pooled.proposal, repr(target), C * n, est, weights.total_ess(log_w), diversity, statistics,
                       pareto_k=k, pareto_k_threshold=weights.k_threshold(n),
                       reference=reference.to_json() if reference is not None else None,
                       rewards=grid(pooled.reward))
    judged = verdicts(pooled.texts, pooled.sample_prompts, pooled.log_phi, target.potential, verifier)
    if judged is not None:
        correct = grid(judged.correct).tolist()
        answers = [judged.answers[i:i + n] for i in range(0, C * n, n)]
        result.verifier = judged.judge
        result.pass_at_k = pass_at_k_curve(correct)
        result.distinct_correct = distinct_correct(answers, correct, normalise=lambda a: a)
    return result


def _against(reference: Reference, model: LM, target: Target, est: dict, statistics: dict, log_w: torch.Tensor):
    """Replaces the figures that need log Z or π* by the reference's (see the module docstring)."""
    if reference.target != repr(target) or reference.samples.prompts != list(target.prompts):
        raise ValueError(f"the reference is of another target ({reference.target}, prompts "
                         f"{reference.samples.prompts}) than {target!r}; make it with bl.reference(target)")
    if model is None:
        raise ValueError("scoring against a reference needs the model q, to score the reference's samples")
    own = est["log_z_model"]
    est["log_z"] = reference.log_z_estimate()
    gap = difference(est["log_z"], own)
    if gap.value > MISSED_MASS_SE * gap.stderr:
        missed = (f"q misses part of π*'s mass: its own log Ẑ is {gap.value:.2f} ± {gap.stderr:.2f} nats below the "
                  "reference's, so figures from q's own weights would be too optimistic")
        est["log_z_model"] = replace(own, unreliable=missed + (f"; {own.unreliable}" if own.unreliable else ""))
    est["kl_model_target"] = difference(est["log_z"], est["elbo"])
    est["eubo"], est["kl_target_model"] = reference.scored_under(model)
    # TV(q, π*) = E_q[(1 − r)₊], r = P/(Z·q): bounded, so a plain mean; log Z_ref's error enters through
    # d/d log Z (1 − r)₊ = r·1{r<1}.
    r = torch.exp(log_w - reference.log_z[:, None])
    gap_q = torch.clamp(1 - r, min=0)
    slope = torch.where(r < 1, r, torch.zeros(()).double()).mean(1)
    tv = mean(gap_q)
    through_z = reference.estimate(slope * reference.log_z, slope[:, None] * (reference.ratio - 1))
    est["tv_model_target"] = Estimate(tv.value, math.hypot(tv.stderr, through_z.stderr), reference.warning)
    for name, sides in statistics.items():
        sides["target"] = reference.statistic(name)


def batch_figures(log_proposal: torch.Tensor, log_model: torch.Tensor, log_target: torch.Tensor,
                  log_prior: torch.Tensor, reward: torch.Tensor, group: int) -> dict[str, float]:
    """Point estimates for the model π_θ from one training batch drawn from a proposal q (q = π_θ on-policy).

    Model expectations use the self-normalised weights π_θ/q, target expectations the weights P/q; each figure
    is computed per prompt (rows grouped `group` at a time) and averaged. Inputs are [B] float64.
    """
    def grouped(x):
        return x.double().reshape(-1, group)

    log_q, log_pi, log_p, log_0, r = map(grouped, (log_proposal, log_model, log_target, log_prior, reward))
    to_model = torch.softmax(log_pi - log_q, 1)  # π_θ/q, normalised
    log_w = log_p - log_q
    log_z, ratio = weights.normalise(log_w)
    to_target = ratio / group

    def under(probabilities, values):
        return torch.where(probabilities > 0, probabilities * values, torch.zeros(()).double()).sum(1)

    elbo = under(to_model, log_p - log_pi)
    # Every target-weighted figure of the batch (log Z, KL(π*‖π), DPG's weights) is as trustworthy as the tail of
    # the normalised weights P/(Ẑq), pooled over the batch: its k̂ beside the threshold for that many samples.
    k = weights.pareto_k((log_w - log_z[:, None]).flatten())
    return {
        "reward_mean": under(to_model, r).mean().item(),
        "log_z": log_z.mean().item(),
        "elbo": elbo.mean().item(),
        "kl_model_target": (log_z - elbo).mean().item(),
        "kl_target_model": (under(to_target, log_p - log_pi) - log_z).mean().item(),
        "entropy": under(to_model, -log_pi).mean().item(),
        "kl_model_prior": under(to_model, log_pi - log_0).mean().item(),
        "ess": weights.total_ess(log_w),
        "pareto_k": k,
        "pareto_k_threshold": weights.k_threshold(log_w.numel()),
        "unreliable": not k <= weights.k_threshold(log_w.numel()),  # JSON writes both k̂ = ±inf as null
    }
