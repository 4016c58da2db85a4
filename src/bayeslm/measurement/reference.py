"""The reference of a target: log Z(c) and weighted samples of π*(·|c), estimated once and shared by every
scorecard against that target.

log Z and π* belong to the target, not to the model scored. A scorecard that took log Ẑ from the scored model's
own samples would inherit whatever part of π* the model no longer covers: a collapsed model's log Ẑ_q falls
short of log Z, and KL(q‖π*) = log Ẑ_q − ELBO_q looks smaller than it is. Against one reference,

    KL(q‖π*) = log Z_ref − ELBO_q            ELBO_q = E_q[log P − log q], a plain mean under q
    EUBO_q   = E_π*[log P − log q]           the reference's π* samples scored under q (a forward pass)
    KL(π*‖q) = EUBO_q − log Z_ref            both from the reference's samples, with their own weights
    E_π*[f]  = Σ_i w̄_i f(x_i)               the same for every model

and a figure is as trustworthy as its own ingredients: KL(q‖π*) needs no importance weight of q at all.

Sources: a pool of the prior's samples (x_i ~ π0, w_i = φ(x_i), log Ẑ = log mean w, w̄_i = w_i/Σw; unbiased in
Z, its k̂ judging the tail), or on a toy prior the enumeration itself (w̄ = π* exactly, no sampling error).

A reference drawn from the prior is cached under `$BAYESLM_CACHE/references`, keyed by everything that defines
it (the prior's source and warp, the prompt format, the potential, the prompts, the length, n, the seed). A cached
one is used only after it proves itself: every sample's log φ recomputed and a few samples' log π0 rescored must
match what was stored (a reward function or a model directory edited since is caught), else it is drawn anew.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from bayeslm import weights
from bayeslm.distributions.enumeration import count
from bayeslm.distributions.lm import LM
from bayeslm.distributions.loading import cache_dir
from bayeslm.measurement.exact import Exact
from bayeslm.modelling.potentials.base import statistics_of
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.weights import Estimate, combine, snis_mean

SOURCES = ("auto", "prior", "exact")
CACHE_FORMAT = 1  # bumped whenever what a cached reference holds, or how it is drawn, changes
CHECKED_ROWS = 8  # samples whose log π0 a cached reference rescored before it is trusted
REFERENCE_SEED = 7_919  # added to a scorecard's seed: the reference's samples are drawn apart from the prior's own
# "auto" enumerates a space of at most this many continuations (a toy prior: a fraction of a second) and samples
# the prior otherwise: where it can be had, the exact reference beats any sample of it.
EXACT_UP_TO = 20_000


@dataclass
class Reference:
    """log Ẑ(c) [C] and the self-normalised weights r = w/Ẑ [C, n] (mean 1 per prompt) of `samples`, n per
    prompt grouped by prompt, of one target. `exact`: the samples are the whole space and r/n = π* exactly."""

    target: str
    source: str
    prior: LM = field(repr=False)  # the target's prior, whose vocabulary and prompt format the samples are in
    samples: ScoredSamples
    log_z: torch.Tensor
    ratio: torch.Tensor
    exact: bool = False
    pareto_k: float = math.nan
    warning: str | None = None  # why figures from these weights cannot be trusted (their tail), or None

    @classmethod
    def from_pool(cls, pool: ScoredSamples, target: Target, *, source: str = "prior") -> Reference:
        """The reference from samples of a proposal r scored against `target` (log w = log P − log r)."""
        _require_mass(pool, source)
        log_w = pool.grid(pool.log_w)
        log_z, ratio = weights.normalise(log_w)
        k, warning = weights.heaviest_tail(log_w, pool.prompts)
        return cls(repr(target), source, target.prior, pool, log_z, ratio, pareto_k=k, warning=warning)

    @property
    def n(self) -> int:
        return self.ratio.shape[1]

    def estimate(self, per_prompt: torch.Tensor, influence: torch.Tensor) -> Estimate:
        """A mean over prompts of a figure of the reference's samples, exact where the reference is."""
        est = combine(per_prompt, torch.zeros_like(influence) if self.exact else influence)
        return replace(est, unreliable=self.warning)

    def log_z_estimate(self) -> Estimate:
        return self.estimate(self.log_z, self.ratio - 1)

    def expect(self, values: torch.Tensor) -> Estimate:
        """E_π*[values] for values [C, n] of the reference's samples."""
        return self.estimate(*snis_mean(values, self.ratio))

    def statistic(self, name: str) -> Estimate:
        return self.expect(self.samples.grid(self.samples.stats[name]))

    def figures(self) -> dict[str, Estimate]:
        """π*'s own figures: log Z, its reward, KL(π*‖π0) = E_π*[log φ] − log Z and H(π*) = log Z − E_π*[log P]
        (where KL-RL's optimum lies; each with log Ẑ's own part of the standard error)."""
        grid = self.samples.grid
        log_phi, log_p = grid(self.samples.log_phi), grid(self.samples.log_target)
        phi, phi_influence = snis_mean(log_phi, self.ratio)
        p, p_influence = snis_mean(log_p, self.ratio)
        return {"log_z": self.log_z_estimate(),
                "target_reward_mean": self.statistic(self.samples.reward_name),
                "kl_target_prior": self.estimate(phi - self.log_z, phi_influence - (self.ratio - 1)),
                "target_entropy": self.estimate(self.log_z - p, (self.ratio - 1) - p_influence)}

    @torch.no_grad()
    def scored_under(self, model: LM) -> tuple[Estimate, Estimate]:
        """(EUBO_q, KL(π*‖q)) of `model` q from the reference's samples scored under q: no generation, and the
        weights are the reference's own, whatever q is."""
        model.check_compatible(self.prior)
        samples = self.samples
        log_q = samples.grid(samples.log_prior if model.same_distribution(self.prior) else
                             model.log_prob(samples.sample_prompts, samples.continuations).double().cpu())
        log_ratio = samples.grid(samples.log_target) - log_q  # log P − log q, −inf off the target's support
        eubo, influence = snis_mean(log_ratio, self.ratio)
        kl = (eubo - self.log_z, influence - (self.ratio - 1))  # log Ẑ_ref is estimated from the same samples
        return self.estimate(eubo, influence), self.estimate(*kl)

    def to_json(self) -> dict:
        out = {"source": self.source, "n": self.n, "exact": self.exact,
               **{key: est.to_json() for key, est in self.figures().items()},
               "log_z_per_prompt": self.log_z.tolist(), "pareto_k": weights.json_float(self.pareto_k),
               "pareto_k_threshold": weights.json_float(weights.k_threshold(self.n)),
               "ess": weights.total_ess(self.samples.grid(self.samples.log_w))}
        return {**out, "unreliable": self.warning} if self.warning else out

    def __str__(self) -> str:
        est = self.log_z_estimate()
        where = "exact, by enumeration" if self.exact else f"{self.n} samples of the {self.source} per prompt"
        return (f"reference of {self.target}: log Z = {est.value:.4f} ± {est.stderr:.4f} ({where}; Pareto k̂ "
                f"{self.pareto_k:.2f})" + (f"\n! unreliable: {self.warning}" if self.warning else ""))


def _require_mass(pool: ScoredSamples, source: str):
    """Stops where some prompt has no sample of positive target weight: no log Z and no π* to weigh by."""
    pool.require_support(f"the reference ({source})",
                         "No continuation has any: the target is empty there (Z = 0)" if source == "exact" else
                         "Draw a larger reference, or a rare constraint needs a proposal closer to the target")


def enumerable(target: Target) -> bool:
    """Whether the target's space is small enough for "auto" to enumerate."""
    prior = target.prior
    return count(prior.model.config.vocab_size, prior.eos_ids.tolist(), target.max_new_tokens) <= EXACT_UP_TO


def reference(target: Target, n: int = 1024, *, seed: int = 0, source: str = "auto") -> Reference:
    """The reference of `target`: from n samples per prompt of its prior (`source="prior"`), or on a toy prior
    small enough to enumerate, exact (`source="exact"`); "auto" enumerates where that is cheap (`EXACT_UP_TO`)."""
    if source not in SOURCES:
        raise ValueError(f"source: expected one of {', '.join(SOURCES)}, got {source!r}")
    prior = target.prior
    if source == "auto":
        source = "exact" if enumerable(target) else "prior"
    if source == "exact":
        space = Exact(target)
        size = len(space.sequences)
        prompt_index = torch.arange(len(target.prompts)).repeat_interleave(size)
        pool = target.score(target.prompts, prompt_index, space.sequences * len(target.prompts),
                            space.texts * len(target.prompts), log_proposal=space.log_prior.flatten(),
                            log_prior=space.log_prior.flatten())
        _require_mass(pool, "exact")
        ratio = torch.exp(space.log_posterior) * size  # π* exactly, as weights of mean 1
        return Reference(repr(target), "exact", prior, pool, space.log_z, ratio, exact=True, pareto_k=-math.inf)
    path = cache_dir() / "references" / f"{_key(target, n, seed)}.pt"
    cached = _load(path, target)
    if cached is not None:
        return cached
    with torch.no_grad():
        samples = prior.sample(target.prompts, n, target.max_new_tokens, seed=seed)
        ref = Reference.from_pool(target.score_samples(samples, prior), target)
    _save(ref, path)
    return ref


def _key(target: Target, n: int, seed: int) -> str:
    prior = target.prior
    defined = {"format": CACHE_FORMAT, "prior": prior.source, "name": prior.name, "warp": repr(prior.warp),
               "chat": prior.chat_spec, "potential": repr(target.potential), "prompts": list(target.prompts),
               "max_new_tokens": target.max_new_tokens, "n": n, "seed": seed}
    return hashlib.sha256(json.dumps(defined, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _save(ref: Reference, path: Path):
    s = ref.samples
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".writing")
        torch.save({"prompts": s.prompts, "prompt_index": s.prompt_index, "continuations": s.continuations,
                    "texts": s.texts, "log_proposal": s.log_proposal, "log_prior": s.log_prior, "log_phi": s.log_phi,
                    "stats": s.stats, "reward_name": s.reward_name}, staging)
        staging.replace(path)  # whole or not at all
    except OSError:  # a read-only or full cache costs the next call a new reference, nothing else
        pass


@torch.no_grad()
def _load(path: Path, target: Target) -> Reference | None:
    """The cached reference at `path`, if it is there, readable and still true of `target`."""
    try:
        held = torch.load(path, weights_only=True)
        pool = ScoredSamples(held["prompts"], held["prompt_index"], held["continuations"], held["texts"],
                             held["log_proposal"], held["log_prior"], held["log_phi"], held["stats"],
                             held["reward_name"], proposal=target.prior.name)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError):
        return None
    sample_prompts = pool.sample_prompts
    log_phi = target.potential.log_phi(statistics_of(target.potential, pool.texts, sample_prompts, pool.continuations))
    rows = list(range(0, len(pool), max(1, len(pool) // CHECKED_ROWS)))[:CHECKED_ROWS]
    log_prior = target.prior.log_prob([sample_prompts[i] for i in rows], [pool.continuations[i] for i in rows])
    if not (torch.allclose(log_phi.double(), pool.log_phi, atol=1e-6, equal_nan=True)
            and torch.allclose(log_prior.double().cpu(), pool.log_prior[rows], atol=1e-3)):
        return None
    return Reference.from_pool(pool, target)
