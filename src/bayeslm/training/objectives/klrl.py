"""KL-regularised RL, which is variational inference (Korbak, Perez & Buckley 2022):

    J(θ) = E_π_θ[r(x)] − β·KL(π_θ‖π0) = β·ELBO(θ) = β·(log Z − KL(π_θ‖π*)),   π* ∝ π0·exp(r/β)

so maximising J minimises the reverse KL to the posterior π*. Here r = β·log φ (for a target
`prior * Exponential(r, β)` that is the user's reward; for any other target r = log φ with β = 1). Where log φ is
a sum over tokens (`Potential.token_log_phi`: a power of the prior π0^α, a teacher's ratio), each token s is
credited with the rewards from s on, Σ_{t≥s} r_t, a dense reward whose gradient has the same expectation (the
rewards before s do not depend on x_s) and less variance.

Gradient, by the score function with a leave-one-out baseline b, for three estimators of the KL term:
  analytic (default)  KL_t = Σ_v π_θ(v|x<t)(log π_θ − log π0)(v|x<t), exact per step and never negative:
                      ∇KL(π_θ‖π0) = E[Σ_t ∇KL_t + Σ_s ∇log π_θ(x_s|x<s)·Σ_{t>s} KL_t]
  k1                  the log-ratio log π_θ/π0 of each sampled token as a penalty on the reward (TRL's choice)
  k3                  (ρ − 1) − log ρ with ρ = π0/π_θ per token, added to the loss (GRPO's choice; its gradient
                      is that of the forward KL(π0‖π_θ), not of the reverse KL)
Optional PPO clipping reuses each batch for several epochs, and an adaptive β holds KL(π_θ‖π0) near a budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from bayeslm.config import field, fraction, positive
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.training.objectives.base import OBJECTIVES, Objective, Step
from bayeslm.training.objectives.policy_gradient import leave_one_out, surrogate


def _to_go(per_token: torch.Tensor, inclusive: bool) -> torch.Tensor:
    """Σ_{t≥s} (inclusive) or Σ_{t>s} of per-token values [B, L], for each position s."""
    suffix = per_token.flip(-1).cumsum(-1).flip(-1)
    return suffix if inclusive else suffix - per_token


@OBJECTIVES.register
@dataclass
class KLRL(Objective):
    """KL-regularised RL: maximises E[r] − β·KL(π_θ‖π0), i.e. minimises the reverse KL(π_θ‖π*) (−β·ELBO)."""

    name: ClassVar[str] = "klrl"
    scores_prior: ClassVar[bool] = True

    kl: Literal["analytic", "k1", "k3"] = field("analytic", doc="estimator of the KL(π_θ‖π0) term")
    ppo_epochs: int = field(1, doc="passes over each batch; > 1 reuses it off-policy, each later pass "
                                   "importance-weighted by its ratio to the sampling log-probs (clipped when clip "
                                   "is set: PPO)", check=positive)
    clip: float | None = field(None, doc="PPO clip range ε (e.g. 0.2); null for plain REINFORCE", check=fraction)
    kl_budget: float | None = field(None, doc="adapt β so that KL(π_θ‖π0) stays near this many nats (the target "
                                              "becomes π0·exp(r/β_t); the final scorecard still uses the declared "
                                              "β)", check=positive)
    adapt_rate: float = field(0.1, doc="how fast the adaptive β moves", check=positive)

    @property
    def epochs(self) -> int:
        return self.ppo_epochs

    def bind(self, target: Target):
        # For prior * Exponential(r, β), log φ = r/β: train on the user's reward r with its own β.
        tempered = target.potential.tempered()
        self.beta = tempered.beta if tempered is not None else 1.0
        self.reward_scale = self.beta
        self.potential = target.potential

    def loss(self, model, prior, batch: ScoredSamples) -> Step:
        if not torch.isfinite(batch.log_phi).all():
            raise ValueError("KL-RL needs a finite log φ for every sample, but this target has hard constraints "
                             "(log φ = −inf): its reverse KL from any model that violates them is infinite. Use "
                             "the dpg objective (forward KL) for constraint targets")
        reward = (self.reward_scale * batch.log_phi).float()
        old, mask, beta = batch.token_log_probs, batch.mask, self.beta
        if self.kl == "analytic":
            log_probs, kl, prior_log_probs = model.token_scores(batch.sample_prompts, batch.continuations, kl_to=prior)
            earned = self._earned(batch, reward, prior_log_probs, mask)
            returns = earned - beta * _to_go(kl.detach(), inclusive=False)
            penalty = beta * kl.sum(-1)
        else:
            log_probs = model.token_log_probs(batch.sample_prompts, batch.continuations)
            with torch.no_grad():
                prior_log_probs = prior.token_log_probs(batch.sample_prompts, batch.continuations)
            earned = self._earned(batch, reward, prior_log_probs, mask)
            if self.kl == "k1":
                kl = torch.where(mask, log_probs.detach() - prior_log_probs, torch.zeros(()))
                returns = earned - beta * _to_go(kl, inclusive=True)
                penalty = torch.zeros(len(batch), device=log_probs.device)
            else:
                log_ratio = torch.where(mask, prior_log_probs - log_probs, torch.zeros(()))
                kl = log_ratio.exp() - log_ratio - 1
                returns = earned.expand_as(log_probs)
                penalty = beta * kl.sum(-1)
        if earned.shape[1] == 1:
            total = reward - beta * kl.detach().sum(-1)
            advantages = returns - leave_one_out(total, batch.group)[:, None]
        else:  # a dense reward: each position's return against the other samples' at that position
            advantages = returns - leave_one_out(returns, batch.group)
        objective = surrogate(log_probs, old, advantages, mask, self.clip)
        exact_kl = kl.detach().sum(-1).double() if self.kl == "analytic" else None
        return Step((penalty - objective).mean(), log_probs.sum(-1).detach().double(), exact_kl,
                    prior_log_probs.sum(-1).double())

    def _earned(self, batch: ScoredSamples, reward: torch.Tensor, prior_log_probs: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:
        """The reward each token is credited with, [B, L] or [B, 1]: from it on where log φ is a sum over tokens,
        else the whole sequence's."""
        per_token = self.potential.token_log_phi(batch.sample_prompts, batch.continuations,
                                                 torch.where(mask, prior_log_probs.detach(), torch.zeros(())))
        return reward[:, None] if per_token is None else self.reward_scale * _to_go(per_token.float(), inclusive=True)

    def after_step(self, figures: dict) -> dict:
        """Proportional control of β towards the KL budget (Ziegler et al. 2019): the error is clipped to ±20%."""
        if self.kl_budget is not None:
            error = max(-0.2, min(0.2, figures["kl_model_prior"] / self.kl_budget - 1))
            self.beta *= 1 + self.adapt_rate * error
        return {"beta": self.beta}

    def state_dict(self):
        return {"beta": self.beta}

    def load_state_dict(self, state):
        self.beta = state["beta"]
