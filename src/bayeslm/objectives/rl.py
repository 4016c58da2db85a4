"""Pure reward maximisation: max_θ E_π_θ[r(x)], by REINFORCE with a leave-one-out baseline.

    ∇J = E_π_θ[(r(x) − b) ∇log π_θ(x)]

No term keeps π_θ near the prior, so its optimum is degenerate: all mass on the reward's argmax (distribution
collapse, the β → 0 limit of KL-RL). It is here as the baseline that shows why the KL term matters.
"""

from __future__ import annotations

from bayeslm.objectives import Batch, Objective, Step
from bayeslm.objectives.policy_gradient import leave_one_out, surrogate


class RL(Objective):
    name = "rl"

    def __init__(self, clip: float | None = None):
        self.clip = clip

    def loss(self, model, prior, batch: Batch) -> Step:
        log_probs = model.token_log_probs(batch.prompts, batch.continuations)
        advantage = (batch.reward - leave_one_out(batch.reward, batch.group)).float()
        objective = surrogate(log_probs, batch.proposal_token_log_probs, advantage[:, None], batch.mask, self.clip)
        return Step(-objective.mean(), log_probs.sum(-1).detach().double())
