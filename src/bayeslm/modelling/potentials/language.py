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


class InLanguage(HardConstraint):
    """φ(x) = 1[x ∈ L] with ψ(prefix) = 1[the prefix is viable]; reads token ids."""

    judges_prefixes = True
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

    def languages(self):
        return [self.language]


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


def languages(target) -> list[Language]:
    """The languages of the target's structured factors (regex, grammar, json_schema)."""
    return target.potential.languages()


def masked(target, lm=None):
    """`lm` (default: the target's prior) masked to the languages of the target's structured factors: locally
    constrained decoding, a proposal whose exact log-probabilities let every sampler correct it (`LM.masked`)."""
    found = languages(target)
    if not found:
        raise ValueError(f"the target {target!r} has no regex, grammar or json_schema potential to mask by")
    return (lm or target.prior).masked(found)


def reach(target, prompts, n: int = 16, seed: int = 0) -> str:
    """Why no sample met the target's languages for `prompts`, as n draws of the prior masked to them tell:
    none completed a string within max_new_tokens (out of reach at that length), or some did (reachable, but rare
    under the proposal). Empty for a target without a language."""
    judges = languages(target)
    if not judges:
        return ""
    q, N = target.prior.masked(judges), target.max_new_tokens
    conts = q.sample(list(prompts), n, N, seed=seed).continuations
    inside = torch.stack([language.accepts(conts) for language in judges]).all(0).view(len(prompts), n)
    eos = set(q.eos_ids.tolist())
    cut = torch.tensor([len(x) == N and x[-1] not in eos for x in conts]).view(len(prompts), n)
    verdicts = {"rare": [], "short": [], "dead": []}
    for prompt, ok, short in zip(prompts, inside, cut):
        verdicts["rare" if ok.any() else "short" if short.all() else "dead"].append(prompt)
    told = {"rare": f"reachable but rare under the proposal (some of {n} draws of the prior masked to the language "
                    "completed a string of it): sample with the masked proposal (--mask; bl.masked) and correct "
                    "it (smc, sir, imh)",
            "short": f"no string of the language is reached within max_new_tokens={N}: {n} draws of the prior "
                     "masked to it were all still incomplete when cut. Raise max_new_tokens",
            "dead": f"{n} draws of the prior masked to the language met dead ends, where no token spells what the "
                    "language needs next"}
    return "; ".join(f"For prompt(s) {kept}, {told[kind]}" for kind, kept in verdicts.items() if kept)


def explained(error, target, seed: int = 0):
    """A `NoSupport` error, with `reach`'s account added where the target has a language."""
    from bayeslm.weights import NoSupport

    told = reach(target, error.prompts or target.prompts, seed=seed)
    return NoSupport(f"{error}. {told}", error.prompts) if told else error
