"""Offensiveness from alt-profanity-check's linear classifier (installed with the package, no download)."""

from __future__ import annotations

from bayeslm.config import ConfigError
from bayeslm.modelling.rewards.base import REWARDS, Reward


@REWARDS.register_function
def offensiveness() -> Reward:
    """Probability in [0, 1] that the text is offensive (alt-profanity-check's linear classifier)."""
    try:
        from profanity_check import predict_prob
    except ImportError as error:
        raise ConfigError(f"the reward 'offensiveness' needs the package 'alt-profanity-check', which is not "
                          f"installed ({error}); install it with `pip install alt-profanity-check`") from error
    return Reward(lambda texts, prompts: predict_prob(texts) if texts else [], "offensiveness")
