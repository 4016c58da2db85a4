"""The potential protocol: evidence φ(x, c) ≥ 0 held in log space, the product of potentials, and the registry of
the kinds a target file names.

What a potential can do is asked of it, never read from its class: every ability has a default that says "not
this one", and a kind that has it overrides that default.

    reads_tokens             judged on token ids (bytes, EOS) as well as text          False
    judges_prefixes          prefix_log_phi scores unfinished prefixes (SMC steers)    False
    log_bound(reward_max)    an upper bound on log φ (rejection sampling's log M)      None: not known
    tempered()               (r, β) where log φ = r/β (KL-RL trains on r with β)       None
    languages()              the formal languages its texts must belong to (masking)   []
    token_log_phi(...)       log φ spread over the tokens (KL-RL's dense reward)       None
    kl_to_prior()            a closed-form KL(π*‖π0) (best-of-n)                        None
    build(prior, ...)        the potential for one prior (a kind that needs the prior) itself
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from bayeslm.distributions.language import Language
from bayeslm.distributions.lm import LM
from bayeslm.modelling.rewards import Reward
from bayeslm.modelling.scored import Statistics
from bayeslm.registry import Registry

# The kinds of potentials a target file names, one module each in bayeslm.modelling.potentials.
POTENTIALS = Registry("potential", "bayeslm.modelling.potentials",
                      lambda entry: isinstance(entry, type) and issubclass(entry, Potential))


@dataclass(frozen=True)
class Tempered:
    """log φ = r/β: a reward and its KL coefficient."""

    reward: Reward
    beta: float


class Potential:
    """Evidence φ(x, c) ≥ 0, held in log space. A potential reports named *statistics* of a batch (the reward, a
    constraint's satisfaction, features) and computes log φ from them, so a reward is evaluated once per sample.

    Most potentials judge the decoded text. One that `reads_tokens` (a language, judged on bytes and EOS) is also
    given the token ids of each continuation, EOS included where it ended: `statistics(texts, prompts, tokens)`;
    `statistics_of` calls any potential the right way."""

    reads_tokens: bool = False
    judges_prefixes: bool = False
    # `prior * potential` makes a target. The target module, which imports this one, sets its Target class here
    # when it loads (bayeslm.modelling.potentials loads it), so that this module need not import it back.
    target_type: ClassVar[type | None] = None

    @property
    def names(self) -> list[str]:
        """Names of the statistics, in order; the first is what the scorecard reports as the reward."""
        raise NotImplementedError

    def statistics(self, texts: Sequence[str], prompts: Sequence[str]) -> Statistics:
        """Named per-sample values [B] (float64) that log φ is computed from."""
        raise NotImplementedError

    def log_phi(self, stats: Statistics) -> torch.Tensor:
        """log φ [B] (float64, may be -inf) from the statistics."""
        raise NotImplementedError

    def __call__(self, texts: Sequence[str], prompts: Sequence[str], tokens=None) -> torch.Tensor:
        return self.log_phi(statistics_of(self, texts, prompts, tokens))

    def prefix_log_phi(self, texts: Sequence[str], prompts: Sequence[str], tokens=None) -> torch.Tensor:
        """log ψ [B] (float64, may be −inf) of unfinished prefixes (their texts, and token ids for a potential that
        reads them), with one promise: ψ(y) = 0 only if every continuation x extending y has φ(x) = 0, so that
        SMC may drop a doomed particle early and stay unbiased. One that cannot judge prefixes (`judges_prefixes`
        False) is 1 on them: it counts once the sequence ends. Judged on text (forbid, starts_with), the promise
        rests on a prefix's text being a prefix of every extension's, which holds for word-level and byte-level BPE
        tokenizers up to an incomplete multi-byte character at the end; languages judge the prefix's bytes."""
        return torch.zeros(len(texts), dtype=torch.float64)

    def log_bound(self, reward_max: float | None = None) -> float | None:
        """log M with log φ ≤ log M everywhere (given the reward's largest value, for a tempered reward), or None
        where no bound is known."""
        return None

    def tempered(self) -> Tempered | None:
        """(r, β) where log φ = r/β, or None."""
        return None

    def languages(self) -> list[Language]:
        """The formal languages (regex, grammar, JSON schema) its texts must belong to."""
        return []

    def token_log_phi(self, prompts: Sequence[str], continuations, prior_token_log_probs: torch.Tensor
                      ) -> torch.Tensor | None:
        """log φ spread over the tokens, [B, L] summing to log φ along each continuation (0 past its end), where φ
        is a product of per-token factors (a power of the prior, a teacher's ratio); None where it is not. Given
        the prior's per-token log-probabilities [B, L]. KL-RL credits each token with the rewards from it on."""
        return None

    def kl_to_prior(self) -> dict | None:
        """KL(π*‖π0) in closed form where the potential knows it (best-of-n), with its parts; else None."""
        return None

    def build(self, prior: LM, prompts: Sequence[str] | None = None, max_new_tokens: int | None = None
              ) -> Potential:
        """The potential for this prior (and prompts): itself, for a potential that needs neither."""
        return self

    def __mul__(self, other: Potential) -> Product:
        if not isinstance(other, Potential):
            return NotImplemented
        return Product([*factors(self), *factors(other)])

    def __rmul__(self, prior: LM):
        """prior * potential is the target π* ∝ π0·φ (`bayeslm.modelling.target.Target`)."""
        return self.target_type(prior, self) if isinstance(prior, LM) else NotImplemented


def factors(p: Potential) -> list[Potential]:
    """The factors of a product, or the potential itself."""
    return p.factors if isinstance(p, Product) else [p]


def statistics_of(potential: Potential, texts: Sequence[str], prompts: Sequence[str], tokens=None) -> Statistics:
    """The potential's statistics of continuations given as texts and, for a potential that reads them, as token
    ids (`tokens`, one list per text)."""
    if not potential.reads_tokens:
        return potential.statistics(texts, prompts)
    if tokens is None:
        raise ValueError(f"{potential!r} judges token ids (bytes and EOS), not text alone: pass the continuations' "
                         "tokens")
    return potential.statistics(texts, prompts, tokens)


class Product(Potential):
    """φ = Π_i φ_i, i.e. log φ = Σ_i log φ_i; each ability combines its factors'."""

    def __init__(self, factors: Sequence[Potential]):
        self.factors = list(factors)
        names = [name for factor in self.factors for name in factor.names]
        if len(set(names)) != len(names):
            raise ValueError(f"the potentials report statistics {names}, some under the same name; give their "
                             "rewards distinct names (Reward(fn, name=...))")

    def __repr__(self) -> str:
        return " * ".join(map(repr, self.factors))

    @property
    def names(self):
        return [name for factor in self.factors for name in factor.names]

    @property
    def reads_tokens(self):
        return any(factor.reads_tokens for factor in self.factors)

    @property
    def judges_prefixes(self):
        return any(factor.judges_prefixes for factor in self.factors)

    def statistics(self, texts, prompts, tokens=None):
        return {name: value for factor in self.factors
                for name, value in statistics_of(factor, texts, prompts, tokens).items()}

    def log_phi(self, stats):
        return sum(factor.log_phi(stats) for factor in self.factors)

    def prefix_log_phi(self, texts, prompts, tokens=None):
        total = torch.zeros(len(texts), dtype=torch.float64)
        for factor in self.factors:
            if factor.judges_prefixes:
                total = total + factor.prefix_log_phi(texts, prompts, tokens)
        return total

    def log_bound(self, reward_max=None):
        bounds = [factor.log_bound(reward_max) for factor in self.factors]
        return None if any(b is None for b in bounds) else sum(bounds)

    def languages(self):
        return [language for factor in self.factors for language in factor.languages()]

    def token_log_phi(self, prompts, continuations, prior_token_log_probs):
        parts = [factor.token_log_phi(prompts, continuations, prior_token_log_probs) for factor in self.factors]
        return None if any(part is None for part in parts) else sum(parts)
