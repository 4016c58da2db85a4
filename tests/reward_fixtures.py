"""Reward functions of a user's own project, importable by dotted path (`{function: reward_fixtures:raises}`) from the
tests: broken ones, and one that works."""

import math


def raises(texts, prompts):
    return [len(t) / 0 for t in texts]


def nan(texts, prompts):
    return [math.nan for _ in texts]


def inf(texts, prompts):
    return [-math.inf for _ in texts]


def too_few(texts, prompts):
    return [0.0] * (len(texts) - 1)


not_a_function = 3.0


def constant(texts, prompts):
    return [1.0] * len(texts)
