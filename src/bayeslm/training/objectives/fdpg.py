"""f-DPG: minimise any f-divergence D_f(π_θ‖π*) = E_π*[f(π_θ/π*)] (Go et al. 2023).

    ∇D_f = E_π_θ[f′(t(x)) ∇log π_θ(x)],   t = π_θ(x)/π*(x) = π_θ(x)·Z/P(x)

so −f′(t) acts as a pseudo-reward. Samples come from a proposal q with weights π_θ/q, and a leave-one-out
baseline (the weighted mean of f′ over the other samples of the prompt) reduces the variance. A new divergence
is one line: its f′ as a function of log t.

The α-divergences f_α(t) = (t^α − α·t − (1 − α)) / (α(α − 1)), f′_α(t) = (t^(α−1) − 1)/(α − 1), run from the
forward KL(π*‖π_θ) (α → 0: DPG, mass-covering) to the reverse KL(π_θ‖π*) (α → 1: KL-RL, mode-seeking); α-DPG
(Kruszewski, Erbacher, Rozen & Dymetman 2026) trains towards a verifier posterior with α in between, to raise
precision while keeping the coverage that pass@k measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from bayeslm.config import field
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.training.objectives.base import OBJECTIVES, Step, mask_option, proposal_option
from bayeslm.training.objectives.log_z import LogZObjective

# f′ as a function of log t. Each f satisfies f(1) = 0, so D_f(π‖π) = 0.
DIVERGENCES = {
    "kl": lambda log_t: -torch.exp(-log_t),  # f(t) = −log t: forward KL(π*‖π_θ), DPG
    "rkl": lambda log_t: log_t + 1,  # f(t) = t log t: reverse KL(π_θ‖π*), KL-RL
    "js": lambda log_t: 0.5 * (math.log(2) + log_t - F.softplus(log_t)),  # Jensen–Shannon: ½ log(2t/(1+t))
    "tv": lambda log_t: 0.5 * torch.sign(log_t),  # f(t) = ½|t − 1|: total variation
    "chi2": lambda log_t: 2 * torch.expm1(log_t),  # f(t) = (t − 1)²: Pearson χ²
    "jeffreys": lambda log_t: log_t + 1 - torch.exp(-log_t),  # f(t) = (t − 1) log t: KL both ways (BOND)
}


def alpha_prime(log_t: torch.Tensor, alpha: float) -> torch.Tensor:
    """f′_α(t) = (t^(α−1) − 1)/(α − 1) as a function of log t (log t itself at α = 1, its limit)."""
    if alpha == 1:
        return log_t
    return torch.expm1((alpha - 1) * log_t) / (alpha - 1)


MAX_LOG_T = 30.0  # where π* is 0 (a violated constraint) t is infinite; capped so f′ stays finite


@OBJECTIVES.register
@dataclass
class FDPG(LogZObjective):
    """f-DPG: minimises an f-divergence D_f(π_θ‖π*) through its f′ pseudo-reward."""

    name: ClassVar[str] = "fdpg"

    proposal: Literal["prior", "model", "adaptive"] = proposal_option()
    mask: bool = mask_option()
    divergence: Literal["kl", "rkl", "js", "tv", "chi2", "jeffreys", "alpha"] = field(
        "js", doc="which f-divergence D_f(π_θ‖π*); alpha: the α-divergence with the option alpha")
    alpha: float = field(0.5, doc="α of the alpha divergence: 0 is the forward KL (DPG), 1 the reverse KL (KL-RL)")

    def bind(self, target):
        super().bind(target)
        self.f_prime = (DIVERGENCES[self.divergence] if self.divergence != "alpha"
                        else lambda log_t: alpha_prime(log_t, self.alpha))

    def loss(self, model, prior, batch: ScoredSamples) -> Step:
        log_model = model.log_prob(batch.sample_prompts, batch.continuations)
        log_q, log_target = batch.log_proposal, batch.log_target
        log_z = self.running_log_z.update(log_target - log_q, batch.sample_prompts)
        with torch.no_grad():
            log_t = (log_model.double() - log_target + log_z).clamp(max=MAX_LOG_T)
            f_prime = self.f_prime(log_t)
            rho = torch.exp(log_model.double() - log_q).reshape(-1, batch.group)  # π_θ/q
            weighted = (rho * f_prime.reshape(-1, batch.group))
            others = (weighted.sum(1, keepdim=True) - weighted) / (rho.sum(1, keepdim=True) - rho).clamp(min=1e-30)
            coefficient = (rho * (f_prime.reshape(-1, batch.group) - others)).reshape(-1)
            coefficient = coefficient.masked_fill(torch.isinf(log_z), 0.0)  # a prompt not yet met: no signal
        return Step((coefficient.float() * log_model).mean(), log_model.detach().double())
