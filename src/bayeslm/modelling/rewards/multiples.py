"""The verifier of the `multiples` task (`bayeslm.modelling.tasks`): 1 for a right answer, else 0."""

from __future__ import annotations

from bayeslm.modelling import tasks
from bayeslm.modelling.rewards.base import REWARDS, Reward


@REWARDS.register_function
def multiples() -> Reward:
    """1.0 when the answer's first new whole number (none of the question's) is a multiple of K strictly between A
    and B, as its prompt asks, else 0.0."""
    return Reward(lambda texts, prompts: [float(tasks.correct(t, p)) for t, p in zip(texts, prompts)], "multiples",
                  answer=lambda text, prompt: str(tasks.answer(text, prompt)))
