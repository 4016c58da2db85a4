"""Potentials that can judge an unfinished prefix, so that sequential Monte Carlo can steer by them.

A `PrefixPotential` is a potential φ(x) that also gives, for a prefix y of a continuation, a value ψ(y) ≥ 0
with one promise: ψ(y) = 0 only if every continuation x that extends y has φ(x) = 0. SMC then drops a doomed
particle as soon as its prefix is doomed rather than when it ends, and stays unbiased: a zero that some
extension would contradict would bias it. `forbid` and `starts_with` are hard constraints on the decoded text,
relying on the text of a prefix being a prefix of the text of any extension, which holds for word-level and
byte-level BPE tokenizers (up to an incomplete multi-byte character at the end); the languages (`regex`,
`grammar`, `json_schema`) judge the prefix's bytes, exactly.
"""

from __future__ import annotations

from typing import Sequence

import torch

from bayeslm.modelling.target import Potential, factors


class PrefixPotential(Potential):
    def prefix_log_phi(self, texts: Sequence[str], prompts: Sequence[str]) -> torch.Tensor:
        """log ψ [B] (float64, may be −inf) of unfinished prefixes, decoded to text (one that `reads_tokens` also
        gets their token ids: `prefix_log_phi(texts, prompts, tokens)`)."""
        raise NotImplementedError


def steers(potential: Potential) -> bool:
    """Whether any factor of the potential can judge prefixes."""
    return any(isinstance(f, PrefixPotential) for f in factors(potential))


def prefix_log_phi(potential: Potential, texts: Sequence[str], prompts: Sequence[str], tokens=None) -> torch.Tensor:
    """log ψ of prefixes (texts, and their token ids for the factors that read them) for any potential: the sum
    over its prefix-aware factors; the others are 1 on prefixes and only count once the sequence ends."""
    total = torch.zeros(len(texts), dtype=torch.float64)
    for factor in factors(potential):
        if isinstance(factor, PrefixPotential):
            total = total + (factor.prefix_log_phi(texts, prompts, tokens) if factor.reads_tokens
                             else factor.prefix_log_phi(texts, prompts))
    return total
