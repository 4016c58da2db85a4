"""Whether a text mentions any of some words."""

from __future__ import annotations

import re

from bayeslm.modelling.rewards.base import REWARDS, Reward


@REWARDS.register_function
def keyword(words: list[str] | str, case_sensitive: bool = False) -> Reward:
    """1.0 when any of the words occurs as a whole word, else 0.0."""
    if isinstance(words, str):
        words = [words]
    if not words:
        raise ValueError("keyword needs at least one word")
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b",
                         0 if case_sensitive else re.IGNORECASE)
    return Reward(lambda texts, prompts: [float(bool(pattern.search(t))) for t in texts],
                  "keyword:" + ",".join(words))
