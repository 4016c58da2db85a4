"""φ(x) = 1[x starts with a given text], judged on prefixes too: a prefix is viable while it and the text
agree so far."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from bayeslm.config import field, validate
from bayeslm.modelling.potentials.base import POTENTIALS
from bayeslm.modelling.potentials.constraint import HardConstraint


@POTENTIALS.register
@dataclass(eq=False)
class StartsWith(HardConstraint):
    """φ(x) = 1 when the text, leading whitespace aside, starts with `text`."""

    judges_prefixes = True

    name: ClassVar[str] = "starts_with"
    text: str = field(doc="the opening every continuation must have")

    def __post_init__(self):
        validate(self)
        if not self.text.strip():
            raise ValueError(f"starts_with needs a non-blank text, got {self.text!r}")
        self.text = self.text.lstrip()
        self.statistic = f"satisfied(starts_with:{self.text})"

    def __repr__(self) -> str:
        return f"StartsWith({self.text!r})"

    def satisfied(self, texts, prompts):
        return torch.tensor([t.lstrip().startswith(self.text) for t in texts], dtype=torch.bool)

    def prefix_log_phi(self, texts, prompts, tokens=None):
        agree = [self.text.startswith(t.lstrip()) or t.lstrip().startswith(self.text) for t in texts]
        return torch.where(torch.tensor(agree, dtype=torch.bool), 0.0, float("-inf")).double()
