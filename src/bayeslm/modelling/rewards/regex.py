"""Whether a regular expression matches somewhere in a text."""

from __future__ import annotations

import re

from bayeslm.modelling.rewards.base import REWARDS, Reward


@REWARDS.register_function
def regex(pattern: str) -> Reward:
    """1.0 when the regular expression matches anywhere in the text, else 0.0."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid regular expression {pattern!r}: {error}") from error
    return Reward(lambda texts, prompts: [float(bool(compiled.search(t))) for t in texts], f"regex:{pattern}")
