"""The length of a text in words."""

from __future__ import annotations

from bayeslm.modelling.rewards.base import REWARDS, Reward


@REWARDS.register_function
def length() -> Reward:
    """Number of whitespace-separated words."""
    return Reward(lambda texts, prompts: [len(t.split()) for t in texts], "length")
