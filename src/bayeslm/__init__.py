"""bayeslm: fine-tune and sample language models as Bayesian inference, measured against an explicit target.

    import bayeslm as bl
    prior  = bl.load_lm("default")
    target = (prior * bl.Exponential(bl.rewards.sentiment(), beta=0.1)).given(["Describe your day."],
                                                                               max_new_tokens=24)
    run    = bl.train(target, bl.KLRL(), steps=30, samples_per_prompt=16, lr=1e-3, lora=bl.LoRA(r=8))
    ref    = bl.reference(target)                      # log Z and π*'s samples, once per target
    print(bl.scorecard(run.model, target, n=256, reference=ref))
    draws  = bl.sample(target, "smc", n=64)

The packages follow the Bayesian view: `distributions` (the LM π as a distribution: loading, sampling, scoring),
`modelling` (rewards, potentials φ, the target π* = π0·φ/Z), `training` (objectives and the one loop),
`samplers` (inference without training), `measurement` (scorecard, exact values, planning, reports),
`parallel` (data-parallel training), `experiments` (demo, guard, reproduce) and `cli`; beside them `api.py`
(train, sample, scorecard), `config.py` and `registry.py` (configs and named entries), `weights.py` (log-weight
arithmetic), `outputs.py` (what a command may write), `preflight.py` (checks before torch), `progress.py`. The
names below are the public API; they load on first use, so that `import bayeslm` (and the command line's start)
does not import torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Public name -> the module that defines it.
_EXPORTS = {
    "LM": "bayeslm.distributions.lm", "Samples": "bayeslm.distributions.lm", "Warp": "bayeslm.distributions.warp",
    "load_lm": "bayeslm.distributions.loading", "toy_lm": "bayeslm.distributions.toy",
    "ToyConfig": "bayeslm.distributions.toy",
    "Target": "bayeslm.modelling.target", "Potential": "bayeslm.modelling.potentials",
    "Product": "bayeslm.modelling.potentials",
    "Exponential": "bayeslm.modelling.potentials", "Constraint": "bayeslm.modelling.potentials",
    "ExponentialFamily": "bayeslm.modelling.potentials", "constrain": "bayeslm.modelling.potentials",
    "Forbid": "bayeslm.modelling.potentials",
    "StartsWith": "bayeslm.modelling.potentials", "best_of": "bayeslm.modelling.potentials",
    "regex": "bayeslm.modelling.potentials", "grammar": "bayeslm.modelling.potentials",
    "json_schema": "bayeslm.modelling.potentials", "masked": "bayeslm.modelling.potentials",
    "power": "bayeslm.modelling.potentials", "teacher": "bayeslm.modelling.potentials",
    "Reward": "bayeslm.modelling.rewards", "ScoredSamples": "bayeslm.modelling.scored",
    "Objective": "bayeslm.training.objectives.base", "Step": "bayeslm.training.objectives.base",
    "KLRL": "bayeslm.training.objectives.klrl", "RL": "bayeslm.training.objectives.rl",
    "DPG": "bayeslm.training.objectives.dpg", "FDPG": "bayeslm.training.objectives.fdpg",
    "TB": "bayeslm.training.objectives.tb",
    "LoRA": "bayeslm.training.config", "TrainConfig": "bayeslm.training.config", "Run": "bayeslm.training.loop",
    "Trainer": "bayeslm.training.loop",
    "Sampler": "bayeslm.samplers.base", "Draws": "bayeslm.samplers.result",
    "Scorecard": "bayeslm.measurement.scorecard", "Exact": "bayeslm.measurement.exact",
    "reference": "bayeslm.measurement.reference", "Reference": "bayeslm.measurement.reference",
    "Plan": "bayeslm.measurement.plan", "Estimate": "bayeslm.weights", "NoSupport": "bayeslm.weights",
    "certify": "bayeslm.measurement.certify", "Certificate": "bayeslm.measurement.certify",
    "guarded": "bayeslm.measurement.guard", "Guarded": "bayeslm.measurement.guard",
    "guard": "bayeslm.experiments.guard", "Guard": "bayeslm.experiments.guard",
    "pass_at_k_curve": "bayeslm.measurement.pass_at_k",
    "train": "bayeslm.api", "sample": "bayeslm.api", "scorecard": "bayeslm.api",
}
# Public submodules: bl.rewards.sentiment(), bl.samplers.smc(...), bl.weights.log_z(...).
_MODULES = {"rewards": "bayeslm.modelling.rewards", "samplers": "bayeslm.samplers",
            "objectives": "bayeslm.training.objectives", "weights": "bayeslm.weights"}

if TYPE_CHECKING:  # what editors and type checkers see: the same names, imported eagerly
    from bayeslm import samplers, weights
    from bayeslm.api import sample, scorecard, train
    from bayeslm.distributions.lm import LM, Samples
    from bayeslm.distributions.loading import load_lm
    from bayeslm.distributions.toy import ToyConfig, toy_lm
    from bayeslm.distributions.warp import Warp
    from bayeslm.experiments.guard import Guard, guard
    from bayeslm.measurement.certify import Certificate, certify
    from bayeslm.measurement.exact import Exact
    from bayeslm.measurement.guard import Guarded, guarded
    from bayeslm.measurement.pass_at_k import pass_at_k_curve
    from bayeslm.measurement.plan import Plan
    from bayeslm.measurement.reference import Reference, reference
    from bayeslm.measurement.scorecard import Scorecard
    from bayeslm.modelling import rewards
    from bayeslm.modelling.potentials import (
        Constraint,
        Exponential,
        ExponentialFamily,
        Forbid,
        Potential,
        Product,
        StartsWith,
        best_of,
        constrain,
        grammar,
        json_schema,
        masked,
        power,
        regex,
        teacher,
    )
    from bayeslm.modelling.rewards import Reward
    from bayeslm.modelling.scored import ScoredSamples
    from bayeslm.modelling.target import Target
    from bayeslm.samplers.base import Sampler
    from bayeslm.samplers.result import Draws
    from bayeslm.training import objectives
    from bayeslm.training.config import LoRA, TrainConfig
    from bayeslm.training.loop import Run, Trainer
    from bayeslm.training.objectives.base import Objective, Step
    from bayeslm.training.objectives.dpg import DPG
    from bayeslm.training.objectives.fdpg import FDPG
    from bayeslm.training.objectives.klrl import KLRL
    from bayeslm.training.objectives.rl import RL
    from bayeslm.training.objectives.tb import TB
    from bayeslm.weights import Estimate, NoSupport

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bayeslm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
