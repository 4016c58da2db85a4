"""Certified bounds on log Z from exact samples of the target: bidirectional Monte Carlo.

The scorecard's log Z, EUBO and KL(π*‖q) weigh samples of q by w = P/q and normalise by their own sum; far from
the target that hides the tail it has not sampled (see `weights.pareto_k`). Where exact samples of π* can be
drawn (rejection sampling with a known bound: constraints under the prior, a bounded reward), both sides of log Z
are estimated without self-normalisation, each a plain mean of independent samples with its usual standard error
(Grosse, Ghahramani & Adams 2015; for language models Zhao, Brekelmans, Makhzani & Grosse, ICML 2024):

    ELBO = E_q[log w]                       ≤ log Z ≤   EUBO = E_π*[log w]
    log mean_i w(x_i),       x_i ~ q        ≤ log Z     in expectation (Jensen: E[Ẑ] = Z)
    −log mean_j 1/w(y_j),    y_j ~ π*       ≥ log Z     in expectation (E_π*[1/w] = q(supp π*)/Z ≤ 1/Z)
    EUBO − ELBO = KL(q‖π*) + KL(π*‖q)       the Jeffreys divergence, whose halves each lie below it

The first pair holds for every n; the second is tighter and holds in expectation, its finite-n bias pointing
outwards. Each is computed per prompt and averaged over the prompts, as log Z is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bayeslm import weights
from bayeslm.distributions.lm import LM
from bayeslm.measurement.scorecard import pool
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.samplers.rejection import known_log_bound, rejection
from bayeslm.weights import Estimate, json_float

# (key, side, label) in the order tables show them; side: what the figure bounds
BOUNDS = [("elbo", "lower", "ELBO = E_q[log w]"), ("log_z_lower", "lower", "log mean w over q"),
          ("log_z_upper", "upper", "−log mean 1/w over π*"), ("eubo", "upper", "EUBO = E_π*[log w]"),
          ("jeffreys", "", "KL(q‖π*) + KL(π*‖q) = EUBO − ELBO")]


@dataclass
class Certificate:
    """Bounds on log Z (mean over prompts) of one model q, from `n` samples of q and `exact_samples` of π* per
    prompt (rejection with bound log M = `log_bound`). `notes` say what could not be certified; `exact` holds the
    enumerated log Z and Jeffreys divergence, when known (toy priors)."""

    model: str
    n: int
    exact_samples: list[int]
    log_bound: float
    bounds: dict[str, Estimate]
    notes: list[str] = field(default_factory=list)
    exact: dict[str, float] | None = None

    def __getitem__(self, key: str) -> Estimate:
        return self.bounds[key]

    def to_json(self) -> dict:
        out = {"model": self.model, "n": self.n, "exact_samples": self.exact_samples, "log_bound": self.log_bound,
               **{key: estimate.to_json() for key, estimate in self.bounds.items()}, "notes": self.notes}
        if self.exact is not None:
            out["exact"] = {key: json_float(value) for key, value in self.exact.items()}
        return out

    def __str__(self) -> str:
        exact = self.exact or {}
        width = max(len(label) for *_, label in BOUNDS) + 6
        low, high = min(self.exact_samples), max(self.exact_samples)
        lines = [f"certified bounds on log Z, from {self.n} samples of q and {low if low == high else f'{low}–{high}'} "
                 f"exact samples of π* per prompt (rejection, log M = {self.log_bound:.4g})", "",
                 f"{'':{width}s} {'estimate':>12s} {'± stderr':>10s}" + (f" {'exact':>10s}" if exact else "")]
        for key, side, label in BOUNDS:
            estimate, truth = self.bounds[key], exact.get("jeffreys" if key == "jeffreys" else "log_z")
            lines.append(f"{side:5s} {label:{width - 6}s} {estimate.value:12.4f} {estimate.stderr:10.4f}"
                         + (f" {truth:10.4f}" if truth is not None else "") + ("  !" if estimate.unreliable else ""))
        lines += [f"! unreliable: {reason}"
                  for reason in sorted({e.unreliable for e in self.bounds.values() if e.unreliable})]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def certify(model: LM, target: Target, n: int = 256, *, reward_max: float | None = None,
            log_bound: float | None = None, budget: int | None = None, seed: int = 0,
            samples: ScoredSamples | None = None) -> Certificate:
    """Bounds on log Z from n samples per prompt of `model` (or `samples`, scored, drawn from it) and n exact
    samples of π* by rejection from the prior. The bound M ≥ P/π0 is `log_bound`, or derived from the target
    with `reward_max` (`samplers.rejection.known_log_bound`, whose error says which option is missing)."""
    if log_bound is None:
        log_bound = known_log_bound(target, reward_max=reward_max)
    if samples is None:
        model.check_compatible(target.prior)
        with torch.no_grad():
            samples = pool(model, target, model.sample(target.prompts, n, target.max_new_tokens, seed=seed),
                           analytic_kl=False)
    exact = rejection(target, n=n, log_bound=log_bound, budget=budget, seed=seed + 1).samples
    with torch.no_grad():
        log_q = (model.log_prob(exact.sample_prompts, exact.continuations).double().cpu() if len(exact)
                 else torch.zeros(0, dtype=torch.float64))
    C = len(target.prompts)
    from_q = [samples.log_w[samples.prompt_index == c] for c in range(C)]
    from_target = [(exact.log_target - log_q)[exact.prompt_index == c] for c in range(C)]
    counts = [len(lw) for lw in from_target]
    bounds = {"elbo": weights.mean(from_q), "log_z_lower": weights.log_z(from_q, target.prompts)[0]}
    notes = []
    if min(counts) < 2:
        short = [p for p, k in zip(target.prompts, counts) if k < 2]
        notes.append(f"no upper bound: fewer than 2 exact samples were accepted for prompt(s) {short} within the "
                     "budget; raise the budget, or the bound is too loose (acceptance Z/M)")
        unknown = Estimate(math.inf, math.nan)
        bounds.update(log_z_upper=unknown, eubo=unknown, jeffreys=unknown)
    else:
        reverse = weights.log_z([-lw for lw in from_target], target.prompts)[0]
        bounds["log_z_upper"] = Estimate(-reverse.value, reverse.stderr, reverse.unreliable)
        bounds["eubo"] = weights.mean(from_target)
        lower, upper = bounds["elbo"], bounds["eubo"]
        bounds["jeffreys"] = Estimate(upper.value - lower.value, math.hypot(upper.stderr, lower.stderr))
    return Certificate(samples.proposal, n, counts, log_bound, {key: bounds[key] for key, *_ in BOUNDS}, notes)

