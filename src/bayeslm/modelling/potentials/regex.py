"""φ(x) = 1[x matches a regular expression, whole], judged on bytes and EOS
(`bayeslm.modelling.potentials.language`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bayeslm.config import field, validate
from bayeslm.modelling.potentials.base import POTENTIALS
from bayeslm.modelling.potentials.language import InLanguage, LanguageSpec


@POTENTIALS.register
@dataclass(eq=False)
class Regex(LanguageSpec):
    """The continuation, ended by EOS, matches `pattern` as a whole (Rust regex syntax: no look-around or
    back-references)."""

    name: ClassVar[str] = "regex"
    kind: ClassVar[str] = "regex"
    pattern: str = field(doc="the regular expression the whole continuation must match")

    def __post_init__(self):
        validate(self)

    def source(self):
        return self.pattern


def regex(prior, pattern: str) -> InLanguage:
    """`prior * regex(prior, pattern)`: the prior conditioned on its continuation matching `pattern`."""
    return Regex(pattern).build(prior)
