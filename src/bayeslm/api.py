"""The three calls of the public API, each a thin front on one package: train (bayeslm.training), sample
(bayeslm.samplers) and scorecard (bayeslm.measurement). The YAML config and the CLI serialise these calls.

    run   = bl.train(target, bl.KLRL(), steps=30, samples_per_prompt=16, lr=1e-3, lora=bl.LoRA(r=8))
    draws = bl.sample(target, "smc", n=64)
    card  = bl.scorecard(run.model, target, n=256, reference=bl.reference(target))
"""

from __future__ import annotations

from pathlib import Path

from bayeslm.distributions.lm import LM
from bayeslm.measurement.reference import REFERENCE_SEED, Reference
from bayeslm.measurement.reference import reference as make_reference
from bayeslm.measurement.scorecard import Scorecard
from bayeslm.modelling.potentials.language import explained
from bayeslm.modelling.rewards import Reward
from bayeslm.modelling.target import Target
from bayeslm.samplers import SAMPLERS, Draws, Sampler
from bayeslm.training.config import LoRA, settings_config
from bayeslm.training.loop import Run
from bayeslm.training.objectives import Objective
from bayeslm.training.run import train as run_training
from bayeslm.weights import NoSupport


def train(target: Target, objective: Objective | str | dict = "klrl", *, out: str | Path | None = None,
          lora: LoRA | None = None, resume: bool = False, overwrite: bool = False, quiet: bool = False,
          callbacks: list | None = None, **settings) -> Run:
    """Fits a model π_θ to `target` by minimising `objective` (an `Objective`, or a name or spec as in YAML);
    `settings` are the training config's keys (steps, lr, samples_per_prompt, ...: docs/config.md). With `out`,
    the run is written there (resumable, reportable); without it nothing is written. Returns the `Run`: the
    model, its final scorecard against the target, the directory and every step's figures. Each of `callbacks`,
    `f(record, trainer)`, gets every step's figures and the `Trainer`, and may return True to end training after
    that step (early stopping: the model is saved and scored as after the last step). `bl.Trainer` takes the same
    arguments, to run the steps yourself."""
    if not isinstance(target, Target):
        raise TypeError(f"train needs a Target (prior * potential), got {type(target).__name__}")
    return run_training(settings_config(objective, lora, settings), Path(out) if out is not None else None,
                        target=target, resume=resume, overwrite=overwrite, quiet=quiet, callbacks=callbacks or [])


def sample(target: Target, method: Sampler | str | dict, n: int = 256, *, proposal: LM | None = None,
           seed: int = 0, **options) -> Draws:
    """n samples per prompt of `target` by `method`: a registered sampler's name with its options as keyword
    arguments (`bl.sample(target, "smc", n=64, ess_threshold=0.3)`), a `Sampler`, or the dotted path of your
    own. Proposals come from `proposal` (default: the target's prior)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if options and not isinstance(method, str):
        raise TypeError("options go with a sampler's name; a Sampler object carries its own")
    sampler = SAMPLERS.build({method: options} if isinstance(method, str) else method, "method")
    if not (hasattr(sampler, "sample") or callable(sampler)):  # a Sampler, or a plain function
        raise TypeError(f"{method!r} is not a sampler: give a Sampler (with a sample method) or a function "
                        "f(target, proposal, n, *, seed) -> Draws")
    try:
        if hasattr(sampler, "sample"):
            draws = sampler.sample(target, proposal, n, seed=seed)
        else:  # a plain function f(target, proposal, n, *, seed) -> Draws
            draws = sampler(target, proposal, n, seed=seed)
        _require_support(draws)
    except NoSupport as error:
        raise explained(error, target, seed) from None
    return draws


def _require_support(draws: Draws):
    """One rule for every sampler: samples of the target must exist for every prompt. Where none has positive
    target weight (nothing drawn satisfies the target, nothing was accepted, every particle died), stop with
    `NoSupport` rather than return samples that are not the target's."""
    draws.samples.require_support(draws.method, "Draw more (-n; --budget, where a sampler accepts within one), or "
                                                "use a proposal closer to the target")


def scorecard(model: LM, target: Target, n: int = 256, *, seed: int = 0, exact: bool = False,
              reference: Reference | None = None, verifier: Reward | None = None) -> Scorecard:
    """Every figure of `model` against `target` (log Z, ELBO, EUBO, both KLs, TV, KL to the prior, rewards,
    entropy, ESS, diversity), each with a standard error, from n samples per prompt; with `exact`, the values by
    enumeration beside them (toy priors only). Where the target has hard constraints, or a `verifier` (a reward,
    correct where not zero) is given, pass@k for k = 1, 2, 4, … n and the distinct correct answers too.

    log Z and π*'s samples come from the target's `reference` (`bl.reference(target)`): pass one to measure several
    models on one scale at the cost of one; without it a reference is made for this call (exact on a toy small
    enough to enumerate, else 1024 samples of the prior per prompt)."""
    from bayeslm.measurement.scorecard import scorecard as estimate

    try:
        reference = reference or make_reference(target, seed=seed + REFERENCE_SEED)
        card = estimate(model, target, n, seed=seed, reference=reference, verifier=verifier)
    except NoSupport as error:
        raise explained(error, target, seed) from None
    if exact:
        from bayeslm.measurement.exact import Exact

        card.exact = Exact(target).scorecard(model, verifier=verifier, ks=list(card.pass_at_k))
    return card
