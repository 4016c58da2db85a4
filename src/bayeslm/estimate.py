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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bayeslm.diversity import distinct_n, self_bleu
from bayeslm.lm import LM, Samples
from bayeslm.target import Target


# Every figure of a scorecard with its label, in the order tables show them (q: the model scored).
FIGURES = [("log_z", "log Z"), ("elbo", "ELBO"), ("eubo", "EUBO"), ("kl_model_target", "KL(q‖π*)"),
           ("kl_target_model", "KL(π*‖q)"), ("tv_model_target", "TV(q,π*)"), ("kl_model_prior", "KL(q‖π0)"),
           ("kl_model_prior_sampled", "KL(q‖π0) sampled"), ("reward_mean", "reward under q"),
           ("target_reward_mean", "reward under π*"), ("entropy", "entropy H(q), nats")]


class NoSupport(ValueError):
    """Every sample of some prompt has zero target weight: nothing to estimate from."""


@dataclass(frozen=True)
class Estimate:
    value: float
    stderr: float

    def to_json(self) -> dict:
        return {"value": _json_float(self.value), "stderr": _json_float(self.stderr)}

    def __str__(self) -> str:
        return f"{self.value:.4f} ± {self.stderr:.4f}" if math.isfinite(self.value) else f"{self.value}"


def _json_float(x: float) -> float | None:
    """JSON has no infinity: an infinite KL (the model puts mass where the target has none) is null."""
    return float(x) if math.isfinite(x) else None


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


def _mean(x: torch.Tensor) -> Estimate:
    mean = x.mean(1)
    return combine(mean, x - mean[:, None])


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
    exact: dict[str, float] | None = field(default=None)
    # Per sample, [C, n]: log w = log P − log q and the reward (for resampling the target; not in the JSON).
    log_weights: torch.Tensor | None = field(default=None, repr=False)
    rewards: torch.Tensor | None = field(default=None, repr=False)

    def __getitem__(self, key: str) -> Estimate:
        return self.estimates[key]

    def to_json(self) -> dict:
        out = {"model": self.model, "target": self.target, "n": self.n, "ess": self.ess}
        out.update({k: e.to_json() for k, e in self.estimates.items()})
        out.update(self.diversity)
        out["statistics"] = {name: {side: e.to_json() for side, e in sides.items()}
                             for name, sides in self.statistics.items()}
        if self.exact is not None:
            out["exact"] = {k: _json_float(v) if isinstance(v, float) else v for k, v in self.exact.items()}
        return out


def log_weight_moments(log_w: torch.Tensor):
    """Per prompt: log Ẑ [C] and the normalised weights r = w/Ẑ [C, n] (mean 1), in log space."""
    n = log_w.shape[1]
    log_z = torch.logsumexp(log_w, 1) - math.log(n)
    return log_z, torch.exp(log_w - log_z[:, None])


def snis_mean(values: torch.Tensor, ratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-normalised IS mean of values [C, n] under π*, given r = w/Ẑ; returns per-prompt means, influences.

    Samples with zero weight contribute nothing, even where the value is infinite."""
    n = values.shape[1]
    weighted = torch.where(ratio > 0, ratio * values, torch.zeros(()).double())
    mean = weighted.sum(1) / n
    influence = torch.where(ratio > 0, ratio * (values - mean[:, None]), torch.zeros(()).double())
    return mean, influence


@dataclass
class Pool:
    """What a scorecard is made of: samples of a model (q), each scored, [C prompts, n samples] per quantity."""

    model: str
    prompts: list[str]
    texts: list[list[str]]
    log_q: torch.Tensor
    log_target: torch.Tensor
    log_prior: torch.Tensor
    kl_prior: torch.Tensor | None  # Σ_t KL(q‖π0) per sample; None where not computed
    stats: dict[str, torch.Tensor]

    @classmethod
    def join(cls, pools: list[Pool]) -> Pool:
        """One pool from pools of the same model and prompts: each prompt's samples side by side."""
        def cat(get):
            return None if get(pools[0]) is None else torch.cat([get(p) for p in pools], 1)

        first = pools[0]
        texts = [sum((p.texts[c] for p in pools), []) for c in range(len(first.prompts))]
        return cls(first.model, first.prompts, texts, cat(lambda p: p.log_q), cat(lambda p: p.log_target),
                   cat(lambda p: p.log_prior), cat(lambda p: p.kl_prior),
                   {k: cat(lambda p, k=k: p.stats[k]) for k in first.stats})


def pool(model: LM, target: Target, samples: Samples, *, analytic_kl: bool = True) -> Pool:
    """Scores `samples`, drawn from `model`, under the target (and KL(model‖prior) per token, when analytic)."""
    model.check_compatible(target.prior)
    if samples.prompts != target.prompts or samples.tokens.shape[1] > target.max_new_tokens:
        raise ValueError("the samples were drawn for other prompts or a longer max_new_tokens than the target's; "
                         "draw them with model.sample(target.prompts, n, target.max_new_tokens)")
    C, n = len(samples.prompts), samples.n

    def per_prompt(x):
        return x.reshape(C, n)

    scored = target.score_samples(samples, model)
    kl_prior = None
    if analytic_kl and not model.same_distribution(target.prior):
        with torch.no_grad():
            kl_prior = per_prompt(model.kl(target.prior, samples.sample_prompts, samples.continuations).double().cpu())
    return Pool(model.name, list(samples.prompts), [samples.texts[c * n:(c + 1) * n] for c in range(C)],
                per_prompt(samples.log_prob.double()), per_prompt(scored.log_target), per_prompt(scored.log_prior),
                kl_prior, {name: per_prompt(value) for name, value in scored.stats.items()})


def scorecard(model: LM, target: Target, n: int = 256, *, seed: int = 0, samples: Samples | None = None,
              analytic_kl: bool = True) -> Scorecard:
    """Samples n continuations per prompt from `model` (or uses `samples`, drawn from it) and scores them."""
    if samples is None:
        model.check_compatible(target.prior)
        samples = model.sample(target.prompts, n, target.max_new_tokens, seed=seed)
    return card(pool(model, target, samples, analytic_kl=analytic_kl), target)


def card(pooled: Pool, target: Target) -> Scorecard:
    """The scorecard of a pool of samples against `target`."""
    log_q, log_prior = pooled.log_q, pooled.log_prior
    log_w = pooled.log_target - log_q
    C, n = log_w.shape
    empty = torch.isneginf(log_w).all(1)
    if empty.any():
        bad = [pooled.prompts[i] for i in empty.nonzero().flatten().tolist()]
        raise NoSupport(f"all {n} samples have zero target weight for prompt(s) {bad} (no sample satisfies the "
                        f"constraints of {target.potential!r}). Draw more samples (-n), or use a proposal closer "
                        "to the target")
    log_z, ratio = log_weight_moments(log_w)
    est = {"log_z": combine(log_z, ratio - 1)}
    elbo = log_w.mean(1)
    est["elbo"] = combine(elbo, log_w - elbo[:, None])
    eubo, eubo_influence = snis_mean(log_w, ratio)
    est["eubo"] = combine(eubo, eubo_influence)
    est["kl_model_target"] = combine(log_z - elbo, (ratio - 1) - (log_w - elbo[:, None]))
    est["kl_target_model"] = combine(eubo - log_z, eubo_influence - (ratio - 1))
    gap = 0.5 * (1 - ratio).abs()
    tv = gap.mean(1)
    # Ẑ is estimated too: d TV / d log Ẑ = E_q[r·1{r<1}] − ½, times log Ẑ's influence r − 1.
    below = torch.where(ratio < 1, ratio, torch.zeros(()).double()).mean(1)
    est["tv_model_target"] = combine(tv, gap - tv[:, None] + (below - 0.5)[:, None] * (ratio - 1))
    est["kl_model_prior"] = _mean(pooled.kl_prior if pooled.kl_prior is not None else log_q - log_prior)
    est["kl_model_prior_sampled"] = _mean(log_q - log_prior)
    statistics = {}
    for name, value in pooled.stats.items():
        statistics[name] = {"model": _mean(value), "target": combine(*snis_mean(value, ratio))}
    est["reward_mean"] = statistics[target.reward_name]["model"]
    est["target_reward_mean"] = statistics[target.reward_name]["target"]
    est["entropy"] = _mean(-log_q)
    ess = (n * n / (ratio ** 2).sum(1)).sum().item()
    diversity = {f"distinct_{k}": sum(distinct_n(g, k) for g in pooled.texts) / C for k in (1, 2, 3)}
    diversity["self_bleu"] = sum(self_bleu(g) for g in pooled.texts) / C
    return Scorecard(pooled.model, repr(target), C * n, est, ess, diversity, statistics,
                     log_weights=log_w, rewards=pooled.stats[target.reward_name])


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
    log_z, ratio = log_weight_moments(log_w)
    to_target = ratio / group

    def under(weights, values):
        return torch.where(weights > 0, weights * values, torch.zeros(()).double()).sum(1)

    elbo = under(to_model, log_p - log_pi)
    return {
        "reward_mean": under(to_model, r).mean().item(),
        "log_z": log_z.mean().item(),
        "elbo": elbo.mean().item(),
        "kl_model_target": (log_z - elbo).mean().item(),
        "kl_target_model": (under(to_target, log_p - log_pi) - log_z).mean().item(),
        "entropy": under(to_model, -log_pi).mean().item(),
        "kl_model_prior": under(to_model, log_pi - log_0).mean().item(),
        "ess": (group * group / (ratio ** 2).sum(1)).sum().item(),
    }
