"""φ(x) = 1[b(x)]: pointwise constraints, whose statistic is their satisfaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from bayeslm.config import ConfigError, field, validate
from bayeslm.modelling.potentials.base import POTENTIALS, Potential, factors
from bayeslm.modelling.rewards import as_reward


class HardConstraint(Potential):
    """φ(x) = 1[b(x)] ∈ {0, 1}, so log φ ≤ 0 (a bound rejection sampling can use). Its one statistic, named
    `statistic`, is the satisfaction indicator."""

    statistic: str

    def satisfied(self, texts: Sequence[str], prompts: Sequence[str]) -> torch.Tensor:
        """Whether each text satisfies the constraint, [B] bool."""
        raise NotImplementedError

    @property
    def names(self):
        return [self.statistic]

    def statistics(self, texts, prompts):
        return {self.statistic: self.satisfied(texts, prompts).double()}

    def log_phi(self, stats):
        return torch.where(stats[self.statistic] > 0, 0.0, float("-inf")).double()

    def log_bound(self, reward_max=None):
        return 0.0

    def answer(self, text: str, prompt: str) -> str:
        """The answer a text gives to its prompt, where the constraint verifies answers (what counts as one
        answer when distinct correct answers are counted): the text, stripped."""
        return text.strip()


@POTENTIALS.register
@dataclass(eq=False)
class Constraint(HardConstraint):
    """φ(x) = 1[b(x)]: with no bounds, b(x) holds when the predicate's value is non-zero; with at_least and/or
    at_most, when the value lies within them (e.g. offensiveness at_most 0.5)."""

    name: ClassVar[str] = "constraint"
    predicate: Any = field(doc="the predicate (a reward's name or spec)", convert=as_reward, kind="a reward")
    at_least: float | None = field(None, doc="the smallest value that satisfies it")
    at_most: float | None = field(None, doc="the largest value that satisfies it")

    def __post_init__(self):
        validate(self)
        self.predicate = as_reward(self.predicate)
        if self.at_least is not None and self.at_most is not None and self.at_least > self.at_most:
            raise ValueError(f"at_least {self.at_least:g} > at_most {self.at_most:g}: no value can satisfy the "
                             "constraint")
        bounds = "".join([f">={self.at_least}" if self.at_least is not None else "",
                          f"<={self.at_most}" if self.at_most is not None else ""])
        # Its statistic is satisfaction, not the predicate's value: named apart from any reward on it.
        self.statistic = f"satisfied({self.predicate.name}{bounds})"

    def __repr__(self) -> str:
        return f"Constraint({self.statistic})"

    def satisfied(self, texts, prompts):
        value = self.predicate(texts, prompts)
        if self.at_least is None and self.at_most is None:
            return value != 0
        holds = torch.ones_like(value, dtype=torch.bool)
        if self.at_least is not None:
            holds &= value >= self.at_least
        if self.at_most is not None:
            holds &= value <= self.at_most
        return holds

    def answer(self, text, prompt):
        return self.predicate.answer(text, prompt)


def hard_constraints(potential: Potential) -> list[HardConstraint]:
    """The factors of `potential` that can be zero: together, what a sample must pass to be in π*'s support."""
    return [factor for factor in factors(potential) if isinstance(factor, HardConstraint)]


def only_constraints(potential: Potential, purpose: str) -> None:
    """Stops unless `potential` is made only of hard constraints (what filtering by them needs: then keeping the
    samples with φ > 0 keeps them in proportion to the proposal)."""
    others = [factor for factor in factors(potential) if not isinstance(factor, HardConstraint)]
    if others:
        raise ConfigError(f"{purpose} needs a target made only of hard constraints (constraint, forbid, starts_with), "
                          f"but it also has {', '.join(map(repr, others))}: filtering keeps a sample or not, it "
                          "cannot weigh it. Sample such a target with importance, sir, qrs, imh or smc")
