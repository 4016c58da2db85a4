"""φ(x) = exp(Σ_k λ_k f_k(x)): an exponential family over features (fit λ to moments with `moments`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bayeslm.config import ConfigError, field, validate
from bayeslm.modelling.potentials.base import POTENTIALS, Potential
from bayeslm.modelling.rewards import as_reward


def rewards_option(values, where: str) -> list:
    """The `convert` of a list of rewards as written in a target file."""
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: expected a non-empty list of rewards, got {values!r}")
    return [as_reward(v, f"{where}[{i}]") for i, v in enumerate(values)]


@POTENTIALS.register
@dataclass(eq=False)
class ExponentialFamily(Potential):
    """φ(x) = exp(Σ_k λ_k f_k(x)), one coefficient λ_k per feature f_k."""

    name: ClassVar[str] = "exponential_family"
    features: Any = field(doc="the features f_k (a list of rewards)", convert=rewards_option,
                    kind="a list of rewards")
    coefficients: list[float] = field(doc="the coefficients λ_k, one per feature")

    def __post_init__(self):
        if isinstance(self.coefficients, torch.Tensor):
            self.coefficients = self.coefficients.tolist()
        validate(self)
        self.features = [as_reward(f) for f in self.features]
        self.coefficients = torch.as_tensor(self.coefficients, dtype=torch.float64).reshape(-1)
        if len(self.features) != len(self.coefficients) or not self.features:
            raise ValueError(f"give one coefficient per feature: {len(self.features)} features, "
                             f"{len(self.coefficients)} coefficients")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names must be distinct, got {names}")

    def __repr__(self) -> str:
        terms = ", ".join(f"{f.name}: {c:.4g}" for f, c in zip(self.features, self.coefficients.tolist()))
        return f"ExponentialFamily({terms})"

    @property
    def names(self):
        return [f.name for f in self.features]

    def statistics(self, texts, prompts):
        return {f.name: f(texts, prompts) for f in self.features}

    def log_phi(self, stats):
        values = torch.stack([stats[f.name] for f in self.features], -1)
        return values @ self.coefficients
