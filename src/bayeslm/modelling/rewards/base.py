"""`Reward`: a named, checked batch function of (texts, prompts) -> one float per text; and rewards from specs.

Every user function is wrapped in `Reward`, which checks what it returns: a reward that raises, returns NaN or
inf, or returns the wrong number of values stops with an error naming the reward and the offending text,
never a silent NaN in the weights.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from bayeslm.config import ConfigError
from bayeslm.registry import Registry

# A reward named by dotted path is a `Reward`, or a function of the user's own project.
REWARDS = Registry("reward", "bayeslm.modelling.rewards", lambda entry: isinstance(entry, Reward), own_functions=True)


class RewardError(ValueError):
    pass


class Reward:
    """A named, checked batch function of (texts, prompts); returns float64 values, shape [B]."""

    def __init__(self, fn: Callable, name: str | None = None, *, varies: bool = False,
                 answer: Callable[[str, str], str] | None = None):
        """`varies`: the reward is a continuous score (a model's output), so the same value for different texts
        means it is broken, and is an error. `answer(text, prompt)`: for a verifier, the answer a text gives (what
        counts as one answer when distinct correct answers are counted); by default the text, stripped."""
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.varies = varies
        self.answer = answer or (lambda text, prompt: text.strip())

    def __repr__(self) -> str:
        return f"Reward({self.name!r})"

    def __call__(self, texts: Sequence[str], prompts: Sequence[str]) -> torch.Tensor:
        texts, prompts = list(texts), list(prompts)
        try:
            raw = self.fn(texts, prompts)
        except Exception as error:
            raise RewardError(f"reward {self.name!r} raised {type(error).__name__}: {error}"
                              f"{self._culprit(texts, prompts)}; fix the function so that it returns a float for "
                              "every text, including this one") from error
        if isinstance(raw, torch.Tensor):
            raw = raw.detach().cpu()
        try:
            values = torch.as_tensor(np.asarray(raw, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError) as error:
            raise RewardError(f"reward {self.name!r} returned {type(raw).__name__} that is not a sequence of "
                              f"numbers ({error}); it must return one float per text") from error
        if values.shape[0] != len(texts):
            raise RewardError(f"reward {self.name!r} returned {values.shape[0]} values for {len(texts)} texts; "
                              "it must return exactly one float per text")
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise RewardError(f"reward {self.name!r} returned {values[i].item()} for the text {texts[i]!r} "
                              f"(prompt {prompts[i]!r}); rewards must be finite numbers: make the function return a "
                              "finite value for such texts (e.g. a floor instead of log 0)")
        if self.varies and len(set(zip(texts, prompts))) > 1 and bool((values == values[0]).all()):
            raise RewardError(f"reward {self.name!r} gave every one of {len(set(texts))} different texts the same "
                              f"score {values[0].item()}: a model whose output does not depend on its input is broken "
                              "(a classification head over one label scored by its softmax, weights that did not "
                              "load). Check the model directory and its num_labels")
        return values

    def _culprit(self, texts, prompts) -> str:
        """Finds the first text on which the function raises alone, to name it in the error."""
        for text, prompt in zip(texts, prompts):
            try:
                self.fn([text], [prompt])
            except Exception:
                return f" on the text {text!r} (prompt {prompt!r})"
        return f" on a batch of {len(texts)} texts"


def as_reward(reward: Reward | Callable | str | dict, where: str = "reward") -> Reward:
    """A `Reward` from a Reward, a plain callable, or a spec as written in a target file (see `from_spec`)."""
    if isinstance(reward, Reward):
        return reward
    if isinstance(reward, (str, dict)):
        return from_spec(reward, where)
    if callable(reward):
        return Reward(reward)
    raise TypeError(f"a reward must be a callable f(texts, prompts) -> floats or a spec, got {reward!r}")


def from_spec(spec: str | dict, where: str = "reward") -> Reward:
    """A reward from a target file: a registered reward's name (`sentiment`), a mapping from its name to its
    options (`{keyword: {words: [movie], case_sensitive: true}}`) or to its first option alone (`{keyword:
    [movie]}`, `{regex: PATTERN}`, `{function: package.module:function}`)."""
    if isinstance(spec, dict) and len(spec) == 1:
        (name, options), = spec.items()
        if not isinstance(options, dict):  # the first option alone
            entry = REWARDS.entries().get(name)
            first = next(iter(entry.__dataclass_fields__), None) if entry is not None else None
            spec = {name: {first: options}} if first is not None else spec
    elif not isinstance(spec, str):
        raise ConfigError(f"{where}: a reward is a name among {', '.join(REWARDS.names())} or a mapping from one to "
                          f"its options, got {spec!r}")
    built = REWARDS.build(spec, where)
    try:
        return built.build() if hasattr(built, "build") else as_reward(built)
    except (ValueError, TypeError, FileNotFoundError) as error:  # a reward that cannot be made as written
        raise ConfigError(f"{where}: {error}") from error
