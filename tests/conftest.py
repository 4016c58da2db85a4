import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bayeslm.distributions.toy import ToyConfig, toy_lm  # noqa: E402
from bayeslm.modelling.rewards import Reward  # noqa: E402

PROMPTS = ["", "the movie"]


@pytest.fixture(scope="session")
def prior():
    """A toy prior trained away from uniform; small enough to enumerate at max_new_tokens=4."""
    return toy_lm(ToyConfig(seed=0, train_steps=200))


@pytest.fixture(scope="session")
def goodness():
    return Reward(lambda texts, prompts: [t.split().count("good") - t.split().count("bad") for t in texts],
                  "goodness")
