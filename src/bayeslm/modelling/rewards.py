"""Rewards and features: batched scalar functions of continuations, `f(texts, prompts) -> one float per text`.

Every user function is wrapped in `Reward`, which checks what it returns: a reward that raises, returns NaN or
inf, or returns the wrong number of values stops with an error naming the reward and the offending text,
never a silent NaN in the weights.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch


class RewardError(ValueError):
    pass


class Reward:
    """A named, checked batch function of (texts, prompts); returns float64 values, shape [B]."""

    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

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
        return values

    def _culprit(self, texts, prompts) -> str:
        """Finds the first text on which the function raises alone, to name it in the error."""
        for text, prompt in zip(texts, prompts):
            try:
                self.fn([text], [prompt])
            except Exception:
                return f" on the text {text!r} (prompt {prompt!r})"
        return f" on a batch of {len(texts)} texts"


def as_reward(reward: Reward | Callable | str | dict) -> Reward:
    """A `Reward` from a Reward, a plain callable, or a spec as written in a target file (see `from_spec`)."""
    if isinstance(reward, Reward):
        return reward
    if isinstance(reward, (str, dict)):
        return from_spec(reward)
    if callable(reward):
        return Reward(reward)
    raise TypeError(f"a reward must be a callable f(texts, prompts) -> floats or a spec, got {reward!r}")


# ----- built-ins -----------------------------------------------------------------------------------------------

def sentiment() -> Reward:
    """VADER compound sentiment score in [-1, 1] (positive is > 0)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return Reward(lambda texts, prompts: [analyzer.polarity_scores(t)["compound"] for t in texts], "sentiment")


def offensiveness() -> Reward:
    """Probability in [0, 1] that the text is offensive (alt-profanity-check's linear classifier)."""
    from profanity_check import predict_prob

    return Reward(lambda texts, prompts: predict_prob(texts) if texts else [], "offensiveness")


def keyword(words: Sequence[str], case_sensitive: bool = False) -> Reward:
    """1.0 when any of the words occurs as a whole word, else 0.0."""
    if isinstance(words, str):
        words = [words]
    if not words:
        raise ValueError("keyword needs at least one word")
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b",
                         0 if case_sensitive else re.IGNORECASE)
    return Reward(lambda texts, prompts: [float(bool(pattern.search(t))) for t in texts],
                  "keyword:" + ",".join(words))


def regex(pattern: str) -> Reward:
    """1.0 when the regular expression matches anywhere in the text, else 0.0."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid regular expression {pattern!r}: {error}") from error
    return Reward(lambda texts, prompts: [float(bool(compiled.search(t))) for t in texts], f"regex:{pattern}")


def length() -> Reward:
    """Number of whitespace-separated words."""
    return Reward(lambda texts, prompts: [len(t.split()) for t in texts], "length")


def classifier(path: str, label: str | int = 1, batch_size: int = 32) -> Reward:
    """Probability of `label` (a name or an index) under a local Hugging Face sequence classifier."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bayeslm.distributions.loading import check_model_dir

    check_model_dir(Path(path), what="classifier", can_opt_in=False)
    # Safe loading: weights from safetensors only, never code shipped in the model directory.
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                               trust_remote_code=False).eval()
    index = label if isinstance(label, int) and not isinstance(label, bool) else model.config.label2id.get(label)
    if index is None or not 0 <= index < model.config.num_labels:
        raise ValueError(f"label {label!r} is not one of the classifier's labels {model.config.id2label}")

    @torch.no_grad()
    def probability(texts, prompts):
        out = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True)
            out.append(model(**batch).logits.float().softmax(-1)[:, index])
        return torch.cat(out).double() if out else []

    return Reward(probability, f"classifier:{Path(path).name}:{label}")


DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*|\.[A-Za-z_]\w*)")


def function(dotted: str) -> Reward:
    """A user function named by an explicit dotted path, 'package.module:function'.

    The text is only ever a name to import, never evaluated: anything but identifiers joined by dots (and one
    colon) is refused before any import."""
    if not isinstance(dotted, str) or not DOTTED.fullmatch(dotted):
        raise ValueError(f"the reward function must be a dotted path 'package.module:function', got {dotted!r}; "
                         "code is never evaluated from a config: put the function in a module and name it")
    module_name, _, attr = dotted.partition(":") if ":" in dotted else dotted.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import the reward function {dotted!r} ({type(error).__name__}: {error}); install "
                         "the package that holds it or add its directory to PYTHONPATH, and name it as "
                         "'package.module:function'") from error
    if not callable(fn):
        raise ValueError(f"{dotted!r} is a {type(fn).__name__}, not a function f(texts, prompts) -> floats")
    return Reward(fn, dotted)


BUILTINS = {"sentiment": sentiment, "offensiveness": offensiveness, "length": length}
PACKAGES = {"sentiment": "vaderSentiment", "offensiveness": "alt-profanity-check"}  # pip names
WITH_ARGS = {"keyword": keyword, "regex": regex, "classifier": classifier, "function": function}


def from_spec(spec: str | dict) -> Reward:
    """A reward from a target file: `sentiment`, `offensiveness`, `length`, `{keyword: [w, ...]}`,
    `{keyword: {words: [...], case_sensitive: true}}`, `{regex: PATTERN}`, `{classifier: {path: P, label: L}}`
    or `{function: package.module:function}`."""
    if isinstance(spec, str):
        if spec not in BUILTINS:
            raise ValueError(f"unknown reward {spec!r}; expected one of {sorted(BUILTINS)} or a mapping with one "
                             f"of {sorted(WITH_ARGS)}")
        try:
            return BUILTINS[spec]()
        except ImportError as error:
            raise ValueError(f"the reward {spec!r} needs the package {PACKAGES.get(spec, error.name)!r}, which is not "
                             f"installed ({error}); install it with `pip install {PACKAGES.get(spec, error.name)}`"
                             ) from error
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in WITH_ARGS:
        raise ValueError(f"a reward must be one of {sorted(BUILTINS)} or a mapping with exactly one key among "
                         f"{sorted(WITH_ARGS)}, got {spec!r}")
    (kind, args), = spec.items()
    make = WITH_ARGS[kind]
    try:
        return make(**args) if isinstance(args, dict) else make(args)
    except TypeError as error:
        raise ValueError(f"bad arguments for reward {kind!r}: {error}") from error
