"""Where an objective's samples come from: the model itself, the prior, or GDC's KL-adaptive proposal.

Every objective composes one `Proposal` (its `proposal` option; `Objective.sampler` asks it which LM draws a
step's samples). The adaptive proposal q starts as the prior and becomes a frozen copy of π_θ whenever π_θ is
closer to the target in forward KL:

    KL(π*‖π_θ) < KL(π*‖q)   ⇔   E_π*[log π_θ − log q] > 0,

estimated after each step on that step's samples of q, self-normalised per prompt with the weights π*/q and
averaged over prompts. It must exceed its standard error, so that noise alone never swaps the proposal, and the
batch's weights must be trustworthy (Pareto k̂ under its threshold, `batch_figures`): a heavy tail hides noise
from the standard error. The trainer supplies what only it can (the updated model's log-probabilities of the
global batch, and a frozen copy of a possibly sharded model); the rule is here.
"""

from __future__ import annotations

from typing import Callable

import torch

from bayeslm.distributions.lm import LM
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.weights import normalise, snis_mean

POLICIES = ("model", "prior", "adaptive")


class Proposal:
    """One objective's sampling policy: "model" (on-policy), "prior", or "adaptive". Its state is `copy`, the
    frozen copy of π_θ the adaptive proposal swapped to (None: still the prior), which a checkpoint keeps."""

    def __init__(self, policy: str):
        if policy not in POLICIES:
            raise ValueError(f"proposal: expected one of {', '.join(POLICIES)}, got {policy!r}")
        self.policy = policy
        self.copy: LM | None = None

    @property
    def adaptive(self) -> bool:
        return self.policy == "adaptive"

    def sampler(self, model: LM, prior: LM) -> LM:
        """The LM this step's samples come from."""
        if self.policy == "model":
            return model
        return self.copy if self.copy is not None else prior

    def judge(self, pieces: list[ScoredSamples], record: dict, log_model: Callable[[], torch.Tensor]) -> str:
        """Whether the updated model should replace the adaptive proposal, from the step's global batch `pieces`
        (grouped by prompt, in order), its figures `record`, and `log_model()`, the updated model's log-probability
        of each sample of `pieces`: "swapped" (make `copy` a copy of it now), "kept", or "unreliable" (weights not
        trusted)."""
        if record["unreliable"]:
            return "unreliable"
        group = pieces[0].group
        log_q = torch.cat([p.log_proposal for p in pieces])
        log_w = torch.cat([p.log_w for p in pieces]).reshape(-1, group)
        gain, influence = snis_mean((log_model().double() - log_q).reshape(-1, group), normalise(log_w)[1])
        stderr = (influence.var(1) / group).sum().sqrt() / len(gain)
        return "swapped" if gain.mean() > stderr else "kept"
