"""Guaranteed generation end to end: amortise, then correct (GUARD: Kim, Thonet, Rozen, Lee, Jung & Dymetman,
ICLR 2025).

For a target made only of hard constraints, g ∝ π0·b, whose rejection sampler from the prior accepts a fraction
Z of its proposals (often tiny):
  1. train a proposal a′ towards g, by default with DPG, whose objective KL(g‖a′) bounds both figures below;
  2. measure the prior and a′ as proposals filtered by b: the acceptance rate AR and KL(g‖g′) = KL(g‖a′) + log AR
     (`bayeslm.measurement.guard`; exact on toy priors);
  3. sample by filtering a′ by b (`bayeslm.samplers.filter`: every sample satisfies b, and the constraint is
     judged again on what is kept), and optionally correct the remaining distortion from a′ with IMH or QRS.
A run directory gets `guard.json` (every figure) and `guard_samples.jsonl` (the filtered samples) beside the
training run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from bayeslm.api import sample, train
from bayeslm.distributions.lm import LM
from bayeslm.measurement.exact import Exact
from bayeslm.measurement.guard import FIGURES, Guarded, guarded
from bayeslm.modelling.potentials import only_constraints
from bayeslm.modelling.target import Target
from bayeslm.outputs import prepare_run_dir
from bayeslm.samplers import Draws, Sampler
from bayeslm.training.objectives import Objective
from bayeslm.training.objectives.dpg import DPG
from bayeslm.training.run import Run


@dataclass
class Guard:
    """What `guard` leaves: the trained proposal a′ (and its run), the prior's and a′'s figures as proposals,
    samples filtered from a′ with the fraction of them that satisfy the constraints, and the corrected samples."""

    model: LM
    run: Run | None
    prior: Guarded
    trained: Guarded
    samples: Draws
    satisfied: float
    corrected: Draws | None = None

    def __repr__(self) -> str:
        return (f"Guard(acceptance {self.prior['acceptance'].value:.4g} → {self.trained['acceptance'].value:.4g}, "
                f"KL(g‖g′) {self.trained['kl_target_filtered'].value:.4g}, {len(self.samples)} samples)")

    def to_json(self) -> dict:
        out = {"prior": self.prior.to_json(), "trained": self.trained.to_json(),
               "filtered": self.samples.summary(), "satisfied": self.satisfied}
        if self.corrected is not None:
            out["corrected"] = self.corrected.summary()
        return out

    def __str__(self) -> str:
        exact = self.prior.exact is not None
        lines = [f"{'proposal':10s}" + "".join(f" {label:>24s}" for _, label in FIGURES)]
        for name, figures in (("prior", self.prior), ("trained", self.trained)):
            cells = [f"{e.value + 0.0:.4f} ± {e.stderr:.4f}" + ("!" if e.unreliable else " ")
                     for e in (figures[key] for key, _ in FIGURES)]
            lines.append(f"{name:10s}" + "".join(f" {cell:>24s}" for cell in cells))
            if exact:
                lines.append(f"{'  exact':10s}" + "".join(f" {figures.exact[key] + 0.0:>23.4f} " for key, _ in FIGURES))
        warnings = sorted({e.unreliable for g in (self.prior, self.trained) for e in g.estimates.values()
                           if e.unreliable})
        lines += [f"! unreliable: {w}" for w in warnings]
        gain = self.trained["acceptance"].value / self.prior["acceptance"].value
        lines += ["", f"KL(g‖g′) = KL(g‖a′) + log AR: filtering the prior is exact and accepts Z of its samples; the "
                      f"trained proposal accepts {gain:.1f}× as often",
                  f"filtered samples: {self.satisfied:.1%} of {len(self.samples)} satisfy the constraints (judged "
                  f"again), from {int(self.samples.proposals.sum())} proposals"]
        if self.corrected is not None:
            lines += ["", "corrected from the trained proposal:", str(self.corrected)]
        return "\n".join(lines)


def guard(target: Target, objective: Objective | str | dict | None = None, *, model: LM | None = None, n: int = 256,
          correct: Sampler | str | dict | None = None, exact: bool = False, out: str | Path | None = None,
          seed: int = 0, quiet: bool = False, overwrite: bool = False, **settings) -> Guard:
    """Trains a proposal towards `target` (hard constraints only) with `objective` (default DPG with the adaptive
    proposal; `settings` are the training config's keys) unless a trained `model` is given, then measures it
    against the prior as proposal and samples n per prompt filtered by the constraints; `correct` (a sampler:
    "imh", {"qrs": {"tv": 0.05}}, ...) also samples the target exactly or nearly from the trained proposal. With
    `exact`, the figures by enumeration beside the estimates (toy priors). With `out`, the run and the results go
    there."""
    only_constraints(target.potential, "guard")  # before any training
    run = None
    if model is None:
        run = train(target, objective or DPG(proposal="adaptive"), out=out, quiet=quiet, overwrite=overwrite,
                    **settings)
        model = run.model
    return measure_and_sample(target, model, run, n=n, correct=correct, exact=exact, out=out, seed=seed)


def measure_and_sample(target: Target, model: LM, run: Run | None, *, n: int, correct, exact: bool,
                       out: str | Path | None, seed: int) -> Guard:
    """Steps 2 and 3 for a trained proposal `model` (its `run`, if trained here)."""
    enumeration = Exact(target) if exact else None
    prior = guarded(target.prior, target, n, seed=seed, exact=enumeration)
    trained = guarded(model, target, n, seed=seed, exact=enumeration)
    draws = sample(target, "filter", n, proposal=model, seed=seed)
    kept = draws.samples
    satisfied = torch.isfinite(target.potential(kept.texts, kept.sample_prompts, kept.continuations)).double()
    satisfied = satisfied.mean().item()
    corrected = sample(target, correct, n, proposal=model, seed=seed) if correct is not None else None
    result = Guard(model, run, prior, trained, draws, satisfied, corrected)
    if out is not None:
        out = Path(out)
        prepare_run_dir(out, resume=True, overwrite=False)  # the run's own directory, or a new one, never the user's
        (out / "guard.json").write_text(json.dumps(result.to_json(), indent=1))
        with open(out / "guard_samples.jsonl", "w", encoding="utf-8") as f:
            for record in draws.records():
                f.write(json.dumps(record) + "\n")
    return result
