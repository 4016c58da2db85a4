"""φ(x) = 1[no forbidden string occurs in x], judged on prefixes too: a string in a prefix stays in every
extension. Substrings, not whole words: "bad" as a whole word in "the bad" is undone by an extension to
"the badge"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from bayeslm.config import field, validate
from bayeslm.modelling.potentials.base import POTENTIALS
from bayeslm.modelling.potentials.constraint import HardConstraint


@POTENTIALS.register
@dataclass(eq=False)
class Forbid(HardConstraint):
    """φ(x) = 1 when none of `strings` occurs in the text (as a substring; case-insensitive by default)."""

    judges_prefixes = True

    name: ClassVar[str] = "forbid"
    strings: list[str] | str = field(doc="the forbidden strings")
    case_sensitive: bool = field(False, doc="match case exactly")

    def __post_init__(self):
        validate(self)
        strings = [self.strings] if isinstance(self.strings, str) else list(self.strings)
        if not strings or not all(strings):
            raise ValueError(f"forbid needs at least one non-empty string, got {self.strings!r}")
        self.statistic = "satisfied(forbid:" + ",".join(strings) + ")"
        self.strings = [s if self.case_sensitive else s.lower() for s in strings]

    def __repr__(self) -> str:
        return f"Forbid({self.strings!r})"

    def satisfied(self, texts, prompts):
        folded = texts if self.case_sensitive else [t.lower() for t in texts]
        return torch.tensor([not any(s in t for s in self.strings) for t in folded], dtype=torch.bool)

    def prefix_log_phi(self, texts, prompts, tokens=None):
        return self(texts, prompts)  # a string in the prefix stays in every extension
