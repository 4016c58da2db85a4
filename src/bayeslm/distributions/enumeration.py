"""Every continuation of at most L tokens, for priors small enough to enumerate: the ground truth of the exact
values (`bayeslm.measurement.exact`) and of the potentials that need a prior's whole law (`best_of`)."""

from __future__ import annotations

import itertools
from typing import Sequence

MAX_SEQUENCES = 200_000


def count(vocab_size: int, eos_ids: Sequence[int], max_new_tokens: int) -> int:
    """How many continuations `continuations` would list."""
    eos, words = len(set(eos_ids)), vocab_size - len(set(eos_ids))
    return sum(words ** k * eos for k in range(max_new_tokens)) + words ** max_new_tokens


def continuations(vocab_size: int, eos_ids: Sequence[int], max_new_tokens: int) -> list[list[int]]:
    """Every continuation of at most max_new_tokens tokens: k < max_new_tokens non-EOS tokens then one of
    the EOS ids, or max_new_tokens non-EOS tokens (cut at the limit)."""
    eos_ids = sorted(set(eos_ids))
    words = [t for t in range(vocab_size) if t not in eos_ids]
    if (total := count(vocab_size, eos_ids, max_new_tokens)) > MAX_SEQUENCES:
        raise ValueError(f"{total} continuations ({len(words)} non-EOS tokens, max_new_tokens={max_new_tokens}) are "
                         f"too many to enumerate (limit {MAX_SEQUENCES}): use a smaller toy vocabulary or length")
    out = []
    for k in range(max_new_tokens + 1):
        for seq in itertools.product(words, repeat=k):
            if k < max_new_tokens:
                out.extend([*seq, eos] for eos in eos_ids)
            else:
                out.append(list(seq))
    return out
