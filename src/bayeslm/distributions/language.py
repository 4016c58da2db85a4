"""Formal languages over a model's tokens: whether a continuation is in a language, whether a prefix can still
get there, and which next tokens keep it so. The machinery under the structured potentials (`regex`, `grammar`,
`json_schema`) and the masked proposal.

A language L is a set of strings, given as a regular expression, a context-free grammar (Lark syntax) or a JSON
schema. A continuation x (token ids, ending in EOS or cut at max_new_tokens) is *in* L when it ended with EOS
and the bytes of its tokens before EOS spell a string of L: an output is complete only when the model ends it.
A prefix is *viable* when its bytes begin some string of L. Both are decided on bytes, so a token may cross
several states of the language or end inside a multi-byte character, and EOS is allowed exactly where the
string is complete.

Why llguidance (Microsoft; 3 MB, no dependencies): one library compiles all three kinds of language and
computes, for a byte-level tokenizer, the exact set of next tokens that keep a prefix viable, every spelling of
a string allowed, not only its canonical tokenization, in tens of microseconds for a 49k vocabulary.
outlines-core has no context-free grammars and turns JSON schemas into regular expressions (no recursion);
xgrammar pulls in triton and TVM; a pure-Python automaton (interegular, lark) would walk 49k tokens a step.
Two of llguidance's defaults are changed: `no_forcing` (by default, bytes the grammar forces are tokenized
canonically, so that other spellings, which the model may well sample, are refused), and the EOS bit, which it
also sets as a forced stop in a dead end: here EOS is allowed only where the matcher accepts.
"""

from __future__ import annotations

import json
import weakref
from typing import Sequence

import torch

from bayeslm.config import ConfigError
from bayeslm.distributions.grammars import checked

_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # HF tokenizer -> llguidance's
_EXECUTOR = None


class Language:
    """A language compiled for one model's tokenizer: membership of continuations, viability of prefixes, and
    the masks of viable next tokens."""

    def __init__(self, kind: str, source, lm):
        import llguidance

        self.kind, self.source = kind, source
        self.tokenizer = _tokenizer(lm)
        try:
            self.grammar = checked(kind, source, self.tokenizer)
        except ConfigError as error:
            raise ConfigError(f"{kind}: {error}") from None
        self.eos_ids = lm.eos_ids.tolist()
        self.width = lm.model.config.vocab_size  # the logits' width (may exceed the tokenizer's vocabulary)
        self._start = llguidance.LLMatcher(self.tokenizer, self.grammar, log_level=0)

    def matcher(self):
        """A matcher at the start of a continuation (advance it with `consume_token`, copy it with `deep_copy`):
        a copy of one compiled once, since compiling costs a millisecond and copying a microsecond."""
        return self._start.deep_copy()

    def accepts(self, continuations: Sequence[Sequence[int]]) -> torch.Tensor:
        """Whether each continuation is in the language: it ends with EOS and its bytes before it spell a string of
        the language, [B] bool."""
        out = torch.zeros(len(continuations), dtype=torch.bool)
        for i, tokens in enumerate(continuations):
            if tokens and tokens[-1] in self.eos_ids:
                m = self.matcher()
                out[i] = _consumed(m, tokens[:-1]) and m.is_accepting()
        return out

    def viable(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """Whether each prefix (no EOS) begins some string of the language, [B] bool."""
        out = torch.zeros(len(prefixes), dtype=torch.bool)
        for i, tokens in enumerate(prefixes):
            m = self.matcher()
            out[i] = _consumed(m, tokens) and _alive(m, self)
        return out

    def masks(self, matchers) -> torch.Tensor:
        """[B, width] bool: the next tokens that keep each matcher's prefix viable, EOS where it accepts (none
        for a matcher in error). The rows are computed together, in llguidance's threads."""
        import llguidance.torch

        bitmask = llguidance.torch.allocate_token_bitmask(len(matchers), self.tokenizer.vocab_size).zero_()
        live = [(m, i) for i, m in enumerate(matchers) if not m.is_error()]
        if live:
            llguidance.torch.fill_next_token_bitmask_par(_executor(), live, bitmask)
        bits = (bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1  # little-endian words
        allowed = torch.zeros(len(matchers), self.width, dtype=torch.bool)
        size = min(self.width, bits.shape[1] * 32)
        allowed[:, :size] = bits.flatten(1)[:, :size].bool()
        # llguidance also sets EOS as a forced stop in a dead end: here EOS is where the matcher accepts.
        accepting = torch.tensor([not m.is_error() and m.is_accepting() for m in matchers], dtype=torch.bool)
        allowed[:, self.eos_ids] = accepting[:, None]
        return allowed

    def consume(self, steps) -> None:
        """Advances each matcher by its token, [(matcher, token)], in llguidance's threads (a token that leaves
        the language puts its matcher in error)."""
        import llguidance.torch

        if steps:
            llguidance.torch.consume_token_par(_executor(), steps)

    def mask(self, m) -> torch.Tensor:
        """[width] bool for one matcher (see `masks`)."""
        return self.masks([m])[0]

    def __repr__(self) -> str:
        text = self.source if isinstance(self.source, str) else json.dumps(self.source, sort_keys=True)
        return f"{self.kind}:{text}"


def _consumed(m, tokens: Sequence[int]) -> bool:
    """Advances the matcher by every token; False when one of them leaves the language."""
    return not tokens or (m.try_consume_tokens(list(tokens)) == len(tokens) and not m.is_error())


def _alive(m, language: Language) -> bool:
    """Whether a matcher's prefix can still be completed: it accepts, or some token other than EOS is viable."""
    if m.is_error():
        return False
    if m.is_accepting():
        return True
    allowed = language.mask(m)
    allowed[language.eos_ids] = False
    return bool(allowed.any())


def _tokenizer(lm):
    """llguidance's view of the LM's tokenizer (built once per tokenizer: about a second for 49k tokens)."""
    import llguidance.hf

    hf = lm.tokenizer
    if hf not in _TOKENIZERS:
        try:
            _TOKENIZERS[hf] = llguidance.hf.from_tokenizer(hf, n_vocab=lm.model.config.vocab_size,
                                                           eos_token=lm.eos_ids.tolist())
        except (ValueError, TypeError) as error:
            raise ConfigError(f"the structured potentials need a byte-level (BPE) or byte-fallback tokenizer, and "
                              f"that of {lm.name} is not one ({error}); toy priors have one with "
                              "{toy: {byte_level: true}}") from None
    return _TOKENIZERS[hf]


def _executor():
    """llguidance's thread pool for masks of many rows (one per process)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        import llguidance

        _EXECUTOR = llguidance.LLExecutor()
    return _EXECUTOR
