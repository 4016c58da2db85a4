"""The sampler protocol: a dataclass of its options whose `sample` draws n samples per prompt of a target.

`SMC(ess_threshold=0.3).sample(target, proposal, n=64)` is what `bl.sample(target, "smc", n=64,
ess_threshold=0.3)` and `bayeslm sample --method smc --ess-threshold 0.3` run. Each built-in keeps its algorithm
in a plain function (`bayeslm.samplers.smc`) with the equation it implements; its registered class only names
it and carries its options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bayeslm.config import validate
from bayeslm.distributions.lm import LM
from bayeslm.modelling.target import Target
from bayeslm.registry import Registry
from bayeslm.samplers.result import Draws

SAMPLERS = Registry("sampler", "bayeslm.samplers", lambda entry: isinstance(entry, type) and issubclass(entry, Sampler))


@dataclass
class Sampler:
    """Base of every sampler."""

    name: ClassVar[str] = "sampler"

    def __post_init__(self):
        validate(self)

    def sample(self, target: Target, proposal: LM | None = None, n: int = 256, *, seed: int = 0) -> Draws:
        """n samples per prompt of `target`, drawn from `proposal` (default: the target's prior)."""
        raise NotImplementedError
