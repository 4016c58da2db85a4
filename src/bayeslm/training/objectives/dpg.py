"""Distributional policy gradient: minimise the forward KL(π*‖π_θ) (Parshakova et al. 2019; Khalifa et al. 2021).

    ∇KL(π*‖π_θ) = −E_π*[∇log π_θ(x)] = −E_q[(P(x) / (Z·q(x))) ∇log π_θ(x)]

an importance-weighted maximum likelihood on samples of a proposal q, with each prompt's Z(c) estimated from
every batch so far. GDC++'s baseline (Korbak et al. 2022) subtracts π_θ(x)/q(x), whose expectation under q times
∇log π_θ is zero, so the weights become P/(Zq) − π_θ/q. The forward KL covers every mode of π* and stays finite
for hard constraints, where the reverse KL of KL-RL is infinite.

The proposal is the prior, the model itself, or "adaptive": starting from the prior, q becomes a frozen copy of
π_θ whenever π_θ is estimated closer to π* in forward KL (GDC's KL-adaptive proposal, `bayeslm.training.proposal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from bayeslm.config import field
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.training.objectives.base import OBJECTIVES, Step, mask_option, proposal_option
from bayeslm.training.objectives.log_z import LogZObjective


@OBJECTIVES.register
@dataclass
class DPG(LogZObjective):
    """Distributional policy gradient: minimises the forward KL(π*‖π_θ) by importance-weighted likelihood."""

    name: ClassVar[str] = "dpg"

    proposal: Literal["prior", "model", "adaptive"] = proposal_option()
    mask: bool = mask_option()
    baseline: bool = field(True, doc="subtract GDC++'s baseline π_θ/q from the weights")

    def loss(self, model, prior, batch: ScoredSamples) -> Step:
        log_model = model.log_prob(batch.sample_prompts, batch.continuations)
        log_q = batch.log_proposal
        log_w = batch.log_target - log_q
        log_z = self.running_log_z.update(log_w, batch.sample_prompts)
        weight = torch.exp(log_w - log_z)  # π*(x|c)/q(x|c)
        if self.baseline:
            weight = weight - torch.exp(log_model.detach().double() - log_q)
        weight = weight.masked_fill(torch.isinf(log_z), 0.0)  # a prompt not yet met: no signal, not the baseline alone
        return Step(-(weight.float() * log_model).mean(), log_model.detach().double())
