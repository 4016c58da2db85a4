"""φ(x) = 1[x ∈ L] for a language L, judged on the continuation's bytes and EOS: what the structured kinds
(`regex`, `grammar`, `json_schema`) build.

x is in L when it ended with EOS and the bytes before EOS spell a string of L (`bayeslm.distributions.language`):
a continuation cut at max_new_tokens is not, however well it began. On a prefix, ψ = 1 while its bytes begin some
string of L, so SMC drops a particle the moment it leaves the language and a masked proposal never does. Each
kind is a spec of its options whose `build(prior, ...)` compiles the language for the prior's tokenizer (in
Python, `bl.regex(prior, pattern)` and the like).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bayeslm.distributions.language import Language
from bayeslm.modelling.potentials.constraint import HardConstraint
from bayeslm.modelling.potentials.prefix import PrefixPotential
from bayeslm.modelling.target import factors


class InLanguage(HardConstraint, PrefixPotential):
    """φ(x) = 1[x ∈ L] with ψ(prefix) = 1[the prefix is viable]; reads token ids."""

    reads_tokens = True

    def __init__(self, language: Language):
        self.language = language
        self.statistic = f"satisfied({language!r})"

    def __repr__(self) -> str:
        return f"InLanguage({self.language!r})"

    def statistics(self, texts, prompts, tokens=None):
        return {self.statistic: self.language.accepts(tokens).double()}

    def prefix_log_phi(self, texts, prompts, tokens=None):
        return torch.where(self.language.viable(tokens), 0.0, float("-inf")).double()


class LanguageSpec:
    """A registered kind's options; `build` compiles its language for a prior (`kind` and `source` say which)."""

    kind: str

    def source(self):
        raise NotImplementedError

    def build(self, prior, prompts=None, max_new_tokens=None) -> InLanguage:
        return InLanguage(Language(self.kind, self.source(), prior))


def read(path: str, what: str) -> str:
    """A grammar or schema file's text, or a clear error naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the {what} file {path}: {error}") from None


def schema_of(text: str, where: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not JSON: {error}") from None


def masked(target, lm=None):
    """`lm` (default: the target's prior) masked to the languages of the target's structured factors: locally
    constrained decoding, a proposal whose exact log-probabilities let every sampler correct it (`LM.masked`)."""
    languages = [factor.language for factor in factors(target.potential) if isinstance(factor, InLanguage)]
    if not languages:
        raise ValueError(f"the target {target!r} has no regex, grammar or json_schema potential to mask by")
    return (lm or target.prior).masked(languages)
