"""Pure reward maximisation: max_θ E_π_θ[r(x)], by REINFORCE with a leave-one-out baseline.

    ∇J = E_π_θ[(r(x) − b) ∇log π_θ(x)]

No term keeps π_θ near the prior, so its optimum is degenerate: all mass on the reward's argmax (distribution
collapse, the β → 0 limit of KL-RL). It is here as the baseline that shows why the KL term matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bayeslm.config import field, fraction, positive
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.training.objectives.base import OBJECTIVES, Objective, Step
from bayeslm.training.objectives.policy_gradient import leave_one_out, surrogate


@OBJECTIVES.register
@dataclass
class RL(Objective):
    """Pure reward maximisation by REINFORCE: collapses onto the reward's argmax (the β → 0 limit)."""

    name: ClassVar[str] = "rl"

    ppo_epochs: int = field(1, doc="passes over each batch (PPO epochs when clip is set)", check=positive)
    clip: float | None = field(None, doc="PPO clip range ε (e.g. 0.2); null for plain REINFORCE", check=fraction)

    @property
    def epochs(self) -> int:
        return self.ppo_epochs

    def loss(self, model, prior, batch: ScoredSamples) -> Step:
        log_probs = model.token_log_probs(batch.sample_prompts, batch.continuations)
        advantage = (batch.reward - leave_one_out(batch.reward, batch.group)).float()
        objective = surrogate(log_probs, batch.token_log_probs, advantage[:, None], batch.mask, self.clip)
        return Step(-objective.mean(), log_probs.sum(-1).detach().double())
