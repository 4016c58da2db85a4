"""Rewards and features: batched scalar functions of continuations, `f(texts, prompts) -> one float per text`.

Each built-in is one module registering its factory in `REWARDS` (its keyword arguments are its options, as in
a target file: `{keyword: {words: [movie]}}`); any function of yours works as a `Reward`, or by dotted path.
`Reward`, the registry and rewards from specs live in `base.py`.

    sentiment        VADER compound score in [-1, 1]
    offensiveness    alt-profanity-check's probability of offence
    keyword          1 when any of the words occurs
    regex            1 when the pattern matches
    length           number of words
    multiples        the verifier of the shipped `multiples` task (bayeslm.modelling.tasks): 1 when right
    classifier       probability of a label under a local classifier
    function         your own function, 'package.module:function'
"""

from bayeslm.modelling.rewards.base import REWARDS, Reward, RewardError, as_reward, from_spec
from bayeslm.modelling.rewards.classifier import classifier
from bayeslm.modelling.rewards.function import function
from bayeslm.modelling.rewards.keyword import keyword
from bayeslm.modelling.rewards.length import length
from bayeslm.modelling.rewards.multiples import multiples
from bayeslm.modelling.rewards.offensiveness import offensiveness
from bayeslm.modelling.rewards.regex import regex
from bayeslm.modelling.rewards.sentiment import sentiment

__all__ = ["REWARDS", "Reward", "RewardError", "as_reward", "classifier", "from_spec", "function", "keyword",
           "length", "multiples", "offensiveness", "regex", "sentiment"]
