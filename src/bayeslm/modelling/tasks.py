"""Verifiable tasks that ship with bayeslm: seeded prompts and a verifier, nothing downloaded.

`multiples`: "Name a whole number between A and B that is a multiple of K. Answer with the number only." (at
difficulty 1, any whole number: "Name a whole number between A and B. Answer with the number only."). Several
answers are right (every multiple of K strictly between A and B), so pass@k and the number of distinct correct
answers both say something pass@1 cannot. The verifier reads A, B and K back from the prompt, takes the first
whole number of the answer that is none of them (restating the question is no answer) and checks it.
`difficulty` 1, 2 or 3 asks for any of 11 numbers, one of 4 multiples of K = 2…5, or one of 2 multiples of
K = 6…9 (A and B are never multiples); SmolLM2-135M-Instruct's pass@1 is about 9%, 3% and 2% (24 tokens,
docs/reasoning.md). The `train` and `held_out` splits never share a prompt (A is even in one, odd in the other),
and `seed` draws another set. In a target file:

    prompts_task: {multiples: {n: 16, difficulty: 1, split: train, seed: 0}}
    potentials: [{constraint: {predicate: multiples}}]      # the verifier posterior π0·1[correct]

This module needs no torch: the check before torch reads the same prompts.
"""

from __future__ import annotations

import random
import re

from bayeslm.config import ConfigError

PROMPT = "Name a whole number between {a} and {b}{multiple}. Answer with the number only."
_ASKED = re.compile(r"between (\d+) and (\d+)(?: that is a multiple of (\d+))?\. Answer with the number only")
_NUMBER = re.compile(r"-?\d[\d,]*")
# Per difficulty: the choices of K, the range's width in multiples of K, where A starts.
LEVELS = {1: ((1,), 12, (10, 90)), 2: ((2, 3, 4, 5), 4, (10, 60)), 3: ((6, 7, 8, 9), 2, (20, 200))}
SPLITS = ("train", "held_out")


def multiples(n: int, difficulty: int = 1, split: str = "train", seed: int = 0) -> list[str]:
    """n distinct prompts of the `multiples` task."""
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"multiples: n must be a positive integer, got {n!r}")
    if difficulty not in LEVELS:
        raise ConfigError(f"multiples: difficulty must be one of {sorted(LEVELS)}, got {difficulty!r}")
    if split not in SPLITS:
        raise ConfigError(f"multiples: split must be one of {', '.join(SPLITS)}, got {split!r}")
    ks, width, (low, high) = LEVELS[difficulty]
    rng = random.Random(f"multiples/{difficulty}/{seed}")
    prompts: list[str] = []
    while len(prompts) < n:
        k, a = rng.choice(ks), rng.randrange(low, high)
        # A is no multiple of K > 1 (nor then is B): the right answers are the multiples strictly inside.
        if (a % 2 == 0) != (split == "train") or (k > 1 and a % k == 0):
            continue
        prompt = PROMPT.format(a=a, b=a + width * k, multiple=f" that is a multiple of {k}" if k > 1 else "")
        if prompt not in prompts:
            prompts.append(prompt)
    return prompts


def answer(text: str, prompt: str | None = None) -> int | None:
    """The first whole number of an answer (commas as thousands separators allowed) that is not one of the
    question's own numbers (given its `prompt`), or None: restating the question is no answer."""
    found = _ASKED.search(prompt) if prompt else None
    asked = {int(x) for x in found.groups() if x is not None} if found else set()
    numbers = (int(found.group().replace(",", "")) for found in _NUMBER.finditer(text))
    return next((number for number in numbers if number not in asked), None)


def correct(text: str, prompt: str) -> bool:
    """Whether the answer's first new whole number is a multiple of K strictly between A and B, as its prompt
    asks."""
    asked = _ASKED.search(prompt)
    if asked is None:
        raise ValueError(f"the multiples verifier needs a prompt of the multiples task, got {prompt[:80]!r}")
    a, b, k = int(asked[1]), int(asked[2]), int(asked[3] or 1)
    given = answer(text, prompt)
    return given is not None and a < given < b and given % k == 0


TASKS = {"multiples": multiples}


def task_prompts(spec, where: str = "") -> list[str]:
    """The prompts `prompts_task: {NAME: {options}}` names."""
    if not (isinstance(spec, dict) and len(spec) == 1):
        raise ConfigError(f"{where}prompts_task: expected {{NAME: {{options}}}} with NAME one of {sorted(TASKS)}, "
                          f"got {spec!r}")
    name, options = next(iter(spec.items()))
    if name not in TASKS:
        raise ConfigError(f"{where}prompts_task: unknown task {name!r}; expected one of {sorted(TASKS)}")
    allowed = {"n", "difficulty", "split", "seed"}
    if not isinstance(options, dict) or set(options) - allowed or "n" not in options:
        raise ConfigError(f"{where}prompts_task.{name}: expected a mapping with n and optionally difficulty, split "
                          f"and seed, got {options!r}")
    return TASKS[name](**options)
