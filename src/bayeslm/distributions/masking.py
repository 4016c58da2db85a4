"""Locally constrained decoding as a distribution: an LM masked to the viable tokens of languages, renormalised.

An LM with `languages` (`LM.masked`) samples, at each step, from its warped next-token distribution restricted
to the tokens that keep the prefix viable in every language (EOS only where each accepts) and renormalised:

    q(y_t | y_<t) = p(y_t | y_<t)·1[y_t ∈ A(y_<t)] / Σ_{v ∈ A(y_<t)} p(v | y_<t)

which is what Outlines, guidance or XGrammar sample. Where no token is viable (a prefix whose language needs bytes
no token spells) the step falls back to p itself, so q is defined everywhere. Sampling and scoring apply the
same masks (scoring replays each continuation through the languages), so q's log-probabilities are exact and
importance sampling, SIR, IMH, QRS and SMC can correct it towards the target: it over-weights prefixes with few
valid continuations (Park et al., NeurIPS 2024, "Grammar-aligned decoding").
"""

from __future__ import annotations

from typing import Sequence

import torch

from bayeslm.distributions.language import Language


def masked(log_probs: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """log_probs [..., V] renormalised over `allowed` [..., V] (bool); rows with nothing allowed unchanged."""
    allowed = allowed.to(log_probs.device)
    anything = allowed.any(-1, keepdim=True)
    kept = log_probs.masked_fill(~allowed, float("-inf"))
    renormalised = kept - torch.logsumexp(kept, -1, keepdim=True).nan_to_num(neginf=0.0)
    return torch.where(anything, renormalised, log_probs)


class Masks:
    """One matcher per row and language while decoding: the allowed next tokens, advanced token by token."""

    def __init__(self, languages: Sequence[Language], rows: int):
        self.languages = list(languages)
        self.matchers = [[language.matcher() for _ in range(rows)] for language in self.languages]

    def allowed(self) -> torch.Tensor:
        """[rows, V] bool: the tokens viable in every language."""
        out = None
        for language, matchers in zip(self.languages, self.matchers):
            mask = language.masks(matchers)
            out = mask if out is None else out & mask
        return out

    def apply(self, log_probs: torch.Tensor) -> torch.Tensor:
        return masked(log_probs, self.allowed())

    def advance(self, tokens: torch.Tensor, live: torch.Tensor):
        """Consumes each live row's token (a row whose prefix left a language stays out of it)."""
        rows = live.nonzero().flatten().tolist()
        for language, matchers in zip(self.languages, self.matchers):
            language.consume([(matchers[i], int(tokens[i])) for i in rows if not matchers[i].is_error()])

    def reorder(self, index: torch.Tensor):
        """Keeps rows `index` (with repeats): a copy of the matcher for each row after the first."""
        seen = set()
        for k, matchers in enumerate(self.matchers):
            picked = []
            for i in index.tolist():
                picked.append(matchers[i].deep_copy() if (k, i) in seen else matchers[i])
                seen.add((k, i))
            self.matchers[k] = picked


def along(languages: Sequence[Language], continuations: Sequence[Sequence[int]], width: int, vocab: int
          ) -> torch.Tensor:
    """[B, width, vocab] bool: the tokens viable at each position of each continuation (as `Masks` allowed
    them while sampling it); all True past a continuation's end."""
    out = torch.ones(len(continuations), width, vocab, dtype=torch.bool)
    lengths = torch.tensor([len(tokens) for tokens in continuations])
    padded = torch.zeros(len(continuations), width, dtype=torch.long)
    for i, tokens in enumerate(continuations):
        padded[i, :len(tokens)] = torch.as_tensor(list(tokens), dtype=torch.long)
    masks = Masks(languages, len(continuations))
    for t in range(max(map(len, continuations), default=0)):
        live = lengths > t
        out[live, t] = masks.allowed()[live, :vocab]
        masks.advance(padded[:, t], live)
    return out
