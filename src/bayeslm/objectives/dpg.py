"""Distributional policy gradient: minimise the forward KL(π*‖π_θ) (Parshakova et al. 2019; Khalifa et al. 2021).

    ∇KL(π*‖π_θ) = −E_π*[∇log π_θ(x)] = −E_q[(P(x) / (Z·q(x))) ∇log π_θ(x)]

an importance-weighted maximum likelihood on samples of a proposal q, with each prompt's Z(c) estimated from
every batch so far. GDC++'s baseline (Korbak et al. 2022) subtracts π_θ(x)/q(x), whose expectation under q times ∇log π_θ is
zero, so the weights become P/(Zq) − π_θ/q. The forward KL covers every mode of π* and stays finite for hard
constraints, where the reverse KL of KL-RL is infinite.

The proposal is the prior, the model itself, or "adaptive": starting from the prior, the training loop replaces
q by a frozen copy of π_θ whenever π_θ is estimated closer to π* in forward KL (GDC's KL-adaptive proposal).
"""

from __future__ import annotations

import torch

from bayeslm.objectives import Batch, Objective, Step
from bayeslm.objectives.log_z import RunningLogZ


class DPG(Objective):
    name = "dpg"
    needs_model_samples = False

    def __init__(self, baseline: bool = True):
        self.baseline = baseline
        self.log_z = RunningLogZ()

    def loss(self, model, prior, batch: Batch) -> Step:
        log_model = model.log_prob(batch.prompts, batch.continuations)
        log_q = batch.log_proposal
        log_w = batch.log_target - log_q
        weight = torch.exp(log_w - self.log_z.update(log_w, batch.prompts))  # π*(x|c)/q(x|c)
        if self.baseline:
            weight = weight - torch.exp(log_model.detach().double() - log_q)
        return Step(-(weight.float() * log_model).mean(), log_model.detach().double())

    def state_dict(self):
        return {"log_z": self.log_z.state_dict()}

    def load_state_dict(self, state):
        self.log_z.load_state_dict(state["log_z"])
