"""Verifiable tasks that ship with bayeslm: seeded prompts and a verifier, nothing downloaded.

`multiples`: "Name a whole number between A and B that is a multiple of K. Answer with the number only." Several
answers are right (every multiple of K from A to B), so pass@k and the number of distinct correct answers both
say something pass@1 cannot. The verifier reads A, B and K back from the prompt, takes the first whole number of
the answer and checks it. `difficulty` 1, 2 or 3 draws larger K and narrower ranges (4–5, 2–3 and 1–2 right
answers); the `train` and `held_out` splits never share a prompt (A is even in one, odd in the other), and `seed`
draws another set. In a target file:

    prompts_task: {multiples: {n: 16, difficulty: 1, split: train, seed: 0}}
    potentials: [{constraint: {predicate: multiples}}]      # the verifier posterior π0·1[correct]

This module needs no torch: the check before torch reads the same prompts.
"""

from __future__ import annotations

import random
import re

from bayeslm.config import ConfigError

PROMPT = "Name a whole number between {a} and {b} that is a multiple of {k}. Answer with the number only."
_ASKED = re.compile(r"between (\d+) and (\d+) that is a multiple of (\d+)")
_NUMBER = re.compile(r"-?\d[\d,]*")
# Per difficulty: the choices of K, the range's width in multiples of K, where A starts.
LEVELS = {1: ((2, 3, 4, 5), 4, (10, 60)), 2: ((3, 4, 6, 7, 8, 9), 2, (20, 200)), 3: ((7, 11, 13, 17, 19), 1, (50, 500))}
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
        if (a % 2 == 0) != (split == "train"):
            continue
        prompt = PROMPT.format(a=a, b=a + width * k, k=k)
        if prompt not in prompts:
            prompts.append(prompt)
    return prompts


def answer(text: str) -> int | None:
    """The first whole number of an answer (commas as thousands separators allowed), or None."""
    found = _NUMBER.search(text)
    return int(found.group().replace(",", "")) if found else None


def correct(text: str, prompt: str) -> bool:
    """Whether the answer's first whole number is a multiple of K from A to B, as its prompt asks."""
    asked = _ASKED.search(prompt)
    if asked is None:
        raise ValueError(f"the multiples verifier needs a prompt of the multiples task, got {prompt[:80]!r}")
    a, b, k = map(int, asked.groups())
    given = answer(text)
    return given is not None and a <= given <= b and given % k == 0


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
