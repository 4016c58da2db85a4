"""A user's own reward function, named by its dotted path (the text is a name to import, never code to run)."""

from __future__ import annotations

from bayeslm.modelling.rewards.base import REWARDS, Reward
from bayeslm.registry import import_dotted


@REWARDS.register_function
def function(dotted: str) -> Reward:
    """A user function f(texts, prompts) -> floats named by an explicit dotted path, 'package.module:function': a
    function of your own project, or a `bl.Reward` (what an installed package declares)."""
    fn = import_dotted(dotted, "reward function", REWARDS.declared, own_functions=True)
    return fn if isinstance(fn, Reward) else Reward(fn, dotted)
