"""Potentials that can judge an unfinished prefix, so that sequential Monte Carlo can steer by them.

A `PrefixPotential` is a potential φ(x) that also gives, for a prefix y of a continuation, a value ψ(y) ≥ 0
with one promise: ψ(y) = 0 only if every continuation x that extends y has φ(x) = 0. SMC then drops a doomed
particle as soon as its prefix is doomed rather than when it ends, and stays unbiased: a zero that some
extension would contradict would bias it. The built-ins are hard constraints on the decoded text:

    Forbid(["bad"])          φ = 1[no forbidden string occurs in x]      ψ(y) = 1[none occurs in y yet]
    StartsWith("Once upon")  φ = 1[x starts with the string]             ψ(y) = 1[y and the string agree so far]

Both rely on the text of a prefix being a prefix of the text of any extension, which holds for word-level and
byte-level BPE tokenizers (up to an incomplete multi-byte character at the end). This is why `Forbid` matches
substrings, not whole words: "bad" as a whole word in "the bad" is undone by an extension to "the badge".
"""

from __future__ import annotations

from typing import Sequence

import torch

from bayeslm.modelling.potentials import Constraint, Potential, Product
from bayeslm.modelling.rewards import Reward


class PrefixPotential(Potential):
    def prefix_log_phi(self, texts: Sequence[str], prompts: Sequence[str]) -> torch.Tensor:
        """log ψ [B] (float64, may be −inf) of unfinished prefixes, decoded to text."""
        raise NotImplementedError


class Forbid(Constraint, PrefixPotential):
    """φ(x) = 1 when none of `strings` occurs in the text (as a substring; case-insensitive by default)."""

    def __init__(self, strings: Sequence[str], *, case_sensitive: bool = False):
        if isinstance(strings, str):
            strings = [strings]
        if not strings or not all(strings):
            raise ValueError(f"forbid needs at least one non-empty string, got {strings!r}")
        self.strings = [s if case_sensitive else s.lower() for s in strings]
        self.case_sensitive = case_sensitive
        super().__init__(Reward(self._clean, "forbid:" + ",".join(strings)))

    def __repr__(self) -> str:
        return f"Forbid({self.strings!r})"

    def _clean(self, texts, prompts):
        folded = texts if self.case_sensitive else [t.lower() for t in texts]
        return [float(not any(s in t for s in self.strings)) for t in folded]

    def prefix_log_phi(self, texts, prompts):
        return self(texts, prompts)  # a string in the prefix stays in every extension


class StartsWith(Constraint, PrefixPotential):
    """φ(x) = 1 when the text, leading whitespace aside, starts with `text`."""

    def __init__(self, text: str):
        if not text.strip():
            raise ValueError("starts_with needs a non-blank text")
        self.text = text.lstrip()
        super().__init__(Reward(self._starts, f"starts_with:{self.text}"))

    def __repr__(self) -> str:
        return f"StartsWith({self.text!r})"

    def _starts(self, texts, prompts):
        return [float(t.lstrip().startswith(self.text)) for t in texts]

    def prefix_log_phi(self, texts, prompts):
        agree = [self.text.startswith(t.lstrip()) or t.lstrip().startswith(self.text) for t in texts]
        return torch.where(torch.tensor(agree, dtype=torch.bool), 0.0, float("-inf")).double()


def factors(potential: Potential) -> list[Potential]:
    return potential.factors if isinstance(potential, Product) else [potential]


def steers(potential: Potential) -> bool:
    """Whether any factor of the potential can judge prefixes."""
    return any(isinstance(f, PrefixPotential) for f in factors(potential))


def prefix_log_phi(potential: Potential, texts: Sequence[str], prompts: Sequence[str]) -> torch.Tensor:
    """log ψ of prefixes for any potential: the sum over its prefix-aware factors; the others are 1 on prefixes
    and only count once the sequence ends."""
    total = torch.zeros(len(texts), dtype=torch.float64)
    for factor in factors(potential):
        if isinstance(factor, PrefixPotential):
            total = total + factor.prefix_log_phi(texts, prompts)
    return total
