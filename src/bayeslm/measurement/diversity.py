"""Diversity of a set of texts: distinct-n and self-BLEU, on whitespace-separated words.

Both are computed among the samples of one prompt and averaged over prompts, so that different prompts do not
count as diversity. Distinct-n falls and self-BLEU rises when a model collapses onto a few outputs.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence


def _ngrams(words: Sequence[str], k: int) -> Counter:
    return Counter(tuple(words[i:i + k]) for i in range(len(words) - k + 1))


def distinct_n(texts: Sequence[str], k: int) -> float:
    """Unique k-grams / all k-grams over the texts (0 when there is no k-gram)."""
    grams = Counter()
    for text in texts:
        grams.update(_ngrams(text.split(), k))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def self_bleu(texts: Sequence[str], max_order: int = 4, limit: int = 256) -> float:
    """Mean BLEU of each text against all the others as references (0: all different, 1: all identical),
    over the first `limit` texts (self-BLEU is quadratic in the number of texts).

    BLEU with clipped k-gram precisions for k = 1..max_order (only the orders the hypothesis is long enough
    for), a brevity penalty against the closest reference length, and a zero precision smoothed to 0.1/count
    (Chen & Cherry's method 1).
    """
    words = [t.split() for t in texts[:limit]]
    if len(words) < 2:
        return 0.0
    counts = [[_ngrams(w, k) for k in range(1, max_order + 1)] for w in words]
    # For each k-gram, the two largest counts and the owner of the largest, so that "max over references
    # other than i" costs O(1).
    top = [dict() for _ in range(max_order)]
    for i, per_order in enumerate(counts):
        for k, grams in enumerate(per_order):
            for gram, c in grams.items():
                best, owner, second = top[k].get(gram, (0, -1, 0))
                top[k][gram] = (c, i, best) if c > best else (best, owner, max(second, c))
    lengths = sorted(len(w) for w in words)
    scores = []
    for i, w in enumerate(words):
        if not w:
            scores.append(0.0)
            continue
        log_precisions = []
        for k, grams in enumerate(counts[i]):
            total = sum(grams.values())
            if not total:
                break
            clipped = 0
            for gram, c in grams.items():
                best, owner, second = top[k][gram]
                clipped += min(c, second if owner == i else best)
            log_precisions.append(math.log(clipped / total if clipped else 0.1 / total))
        others = list(lengths)
        others.remove(len(w))
        closest = min(others, key=lambda r: (abs(r - len(w)), r))
        brevity = min(0.0, 1 - closest / len(w))
        scores.append(math.exp(brevity + sum(log_precisions) / len(log_precisions)))
    return sum(scores) / len(scores)
