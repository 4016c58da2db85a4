"""A user's own reward function, named by its dotted path (the text is a name to import, never code to run)."""

from __future__ import annotations

from bayeslm.modelling.rewards.base import REWARDS, Reward
from bayeslm.registry import import_dotted


@REWARDS.register_function
def function(dotted: str) -> Reward:
    """A user function f(texts, prompts) -> floats named by an explicit dotted path, 'package.module:function'."""
    fn = import_dotted(dotted, "reward function")
    if not callable(fn):
        raise ValueError(f"{dotted!r} is a {type(fn).__name__}, not a function f(texts, prompts) -> floats")
    return Reward(fn, dotted)
