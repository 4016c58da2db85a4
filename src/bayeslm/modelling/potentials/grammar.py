"""φ(x) = 1[x is a sentence of a context-free grammar], judged on bytes and EOS
(`bayeslm.modelling.potentials.language`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bayeslm.config import field, validate
from bayeslm.modelling.potentials.base import POTENTIALS
from bayeslm.modelling.potentials.language import InLanguage, LanguageSpec, read


@POTENTIALS.register
@dataclass(eq=False)
class Grammar(LanguageSpec):
    """The continuation, ended by EOS, is a sentence of a Lark grammar (llguidance's dialect: its `start` rule;
    terminals are matched longest first, so merge terminals that one could swallow into the next)."""

    name: ClassVar[str] = "grammar"
    kind: ClassVar[str] = "lark"
    lark: str | None = field(None, doc="the grammar, in Lark syntax")
    file: str | None = field(None, doc="or a file holding it (relative to the target file)")

    def __post_init__(self):
        validate(self)
        if (self.lark is None) == (self.file is None):
            raise ValueError("grammar needs exactly one of lark (the grammar itself) or file (a file holding it)")

    def source(self):
        return self.lark if self.lark is not None else read(self.file, "grammar")


def grammar(prior, lark: str) -> InLanguage:
    """`prior * grammar(prior, lark)`: the prior conditioned on its continuation being a sentence of `lark`."""
    return Grammar(lark=lark).build(prior)
