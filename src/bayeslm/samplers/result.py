"""What a sampler returns: its samples scored against the target, and the figures that say how good they are.

Samples may carry weights (importance sampling, SMC): `log_weight` is then the log of each sample's weight up to
a constant per prompt, and averages over the result must use the normalised weights `weights()`. Samplers whose
samples are (approximately) distributed as the target return `log_weight` = 0. Every figure a method does not
produce is None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bayeslm.modelling.scored import ScoredSamples
from bayeslm.weights import Estimate, json_float


@dataclass
class Draws:
    method: str
    samples: ScoredSamples
    log_weight: torch.Tensor
    requested: int  # samples asked for per prompt
    proposals: torch.Tensor  # proposals drawn per prompt, [C]
    acceptance: torch.Tensor | None = None  # probability with which each sample was accepted, [N]
    acceptance_rate: float | None = None  # accepted / proposed
    ess: float | None = None  # effective sample size behind the figures, summed over prompts
    log_z: Estimate | None = None  # mean over prompts
    log_z_per_prompt: torch.Tensor | None = None
    log_z_stderr_per_prompt: torch.Tensor | None = None  # where the sampler estimates it (SMC)
    figures: dict[str, float | list[float] | Estimate] = field(default_factory=dict)  # method-specific
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def counts(self) -> list[int]:
        """Samples obtained for each prompt."""
        return self.samples.counts().tolist()

    def weights(self) -> torch.Tensor:
        """Normalised weight of each sample within its prompt (each prompt's weights sum to one)."""
        index, C = self.samples.prompt_index, len(self.samples.prompts)
        top = torch.full((C,), -math.inf, dtype=torch.float64).scatter_reduce(0, index, self.log_weight, "amax")
        unnormalised = torch.exp(self.log_weight - top[index].nan_to_num(neginf=0.0))
        totals = torch.zeros(C, dtype=torch.float64).index_add(0, index, unnormalised)
        return unnormalised / totals[index]

    def records(self) -> list[dict]:
        """One JSON object per sample: prompt, text, tokens, log-probabilities, rewards, weight (and acceptance)."""
        s = self.samples
        stats = {k: v.tolist() for k, v in s.stats.items()}
        columns = [s.sample_prompts, s.texts, s.continuations, s.log_prior.tolist(), s.log_target.tolist(),
                   s.log_proposal.tolist(), self.weights().tolist()]
        acceptance = self.acceptance.tolist() if self.acceptance is not None else None
        out = []
        for i, (prompt, text, tokens, lp, lt, lq, weight) in enumerate(zip(*columns)):
            record = {"prompt": prompt, "text": text, "tokens": tokens, "log_prior": json_float(lp),
                      "log_target": json_float(lt), "log_proposal": json_float(lq),
                      "rewards": {k: v[i] for k, v in stats.items()}, "weight": json_float(weight)}
            if acceptance is not None:
                record["acceptance"] = acceptance[i]
            out.append(record)
        return out

    def summary(self) -> dict:
        out = {"method": self.method, "samples": len(self), "requested": self.requested * len(self.samples.prompts),
               "per_prompt": self.counts(), "proposals": int(self.proposals.sum())}
        if self.acceptance_rate is not None:
            out["acceptance_rate"] = self.acceptance_rate
        if self.ess is not None:
            out["ess"] = self.ess
        if self.log_z is not None:
            out["log_z"] = self.log_z.to_json()
        out.update({k: v.to_json() if isinstance(v, Estimate) else [json_float(x) for x in v]
                    if isinstance(v, list) else json_float(v) for k, v in self.figures.items()})
        out["notes"] = self.notes
        return out

    def __str__(self) -> str:
        lines = [f"method      {self.method}",
                 f"samples     {len(self)} of {self.requested * len(self.samples.prompts)} requested "
                 f"({len(self.samples.prompts)} prompt(s)), from {int(self.proposals.sum())} proposals"]
        if self.acceptance_rate is not None:
            lines.append(f"acceptance  {self.acceptance_rate:.4f}")
        if self.ess is not None:
            lines.append(f"ESS         {self.ess:.1f}")
        if self.log_z is not None:
            stderr = f" ± {self.log_z.stderr:.4f}" if math.isfinite(self.log_z.stderr) else ""
            lines.append(f"log Z       {self.log_z.value:.4f}{stderr}  (mean over prompts)")
            if self.log_z.unreliable:
                lines.append(f"            unreliable: {self.log_z.unreliable}")
        for key, value in self.figures.items():
            shown = (str(value) if isinstance(value, Estimate) else ", ".join(f"{x:.3f}" for x in value)
                     if isinstance(value, list) else f"{value:.4f}")
            lines.append(f"{key:11s} {shown}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def shortfall(draws: Draws, budget: int) -> Draws:
    """Adds a note naming each prompt whose proposal budget ran out before it had all its samples."""
    for prompt, got in zip(draws.samples.prompts, draws.counts()):
        if got < draws.requested:
            draws.notes.append(f"the budget of {budget} proposals ran out for prompt {prompt!r}: kept the {got} "
                               f"of {draws.requested} samples accepted so far")
    return draws
