"""φ(x) = exp(r(x)/β): the target of KL-regularised RL with reward r and KL coefficient β."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bayeslm.config import field, positive, validate
from bayeslm.modelling.potentials.base import POTENTIALS, Potential, Tempered
from bayeslm.modelling.rewards import as_reward


@POTENTIALS.register
@dataclass(eq=False)
class Exponential(Potential):
    """φ(x) = exp(r(x)/β): the posterior of KL-regularised RL with reward r and coefficient β."""

    name: ClassVar[str] = "exponential"
    reward: Any = field(doc="the reward r (a reward's name or spec)", convert=as_reward, kind="a reward")
    beta: float = field(doc="the KL coefficient β (nats per unit of reward)", check=positive)

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta} (beta -> 0 is pure reward maximisation, whose "
                             "optimum is a collapsed distribution)")
        validate(self)
        self.reward, self.beta = as_reward(self.reward), float(self.beta)

    def __repr__(self) -> str:
        return f"Exponential({self.reward.name}, beta={self.beta})"

    @property
    def names(self):
        return [self.reward.name]

    def statistics(self, texts, prompts):
        return {self.reward.name: self.reward(texts, prompts)}

    def log_phi(self, stats):
        return stats[self.reward.name] / self.beta

    def log_bound(self, reward_max=None):
        return None if reward_max is None else reward_max / self.beta

    def tempered(self):
        return Tempered(self.reward, self.beta)
