"""VADER's compound sentiment score (vaderSentiment: a lexicon, no model to download)."""

from __future__ import annotations

from bayeslm.config import ConfigError
from bayeslm.modelling.rewards.base import REWARDS, Reward


@REWARDS.register_function
def sentiment() -> Reward:
    """VADER compound sentiment score in [-1, 1] (positive is > 0)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as error:
        raise ConfigError(f"the reward 'sentiment' needs the package 'vaderSentiment', which is not installed "
                          f"({error}); install it with `pip install vaderSentiment`") from error
    analyzer = SentimentIntensityAnalyzer()
    return Reward(lambda texts, prompts: [analyzer.polarity_scores(t)["compound"] for t in texts], "sentiment")
