"""What every registered sampler must satisfy, checked on each (a new sampler is covered without an edit): its
options are declared once, documented and checked; it draws n samples a prompt of the target, scored against it,
with weights that sum to one for each prompt; and it follows the one rule where no sample has positive weight."""

import dataclasses

import pytest
import torch

import bayeslm as bl
from bayeslm.config import ConfigError
from bayeslm.samplers import SAMPLERS
from bayeslm.weights import NoSupport

PROMPTS = ["", "the movie"]
# What a sampler needs beyond its defaults to run on the toy target below.
NEEDS = {"qrs": {"qrs_beta": 2.0}, "rejection": {"reward_max": 1.0}}


@pytest.fixture(scope="module")
def target():
    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 50}})
    potential = bl.Exponential(bl.rewards.keyword(["good"]), beta=0.5) * bl.Forbid("bad")
    return (prior * potential).given(PROMPTS, max_new_tokens=3)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_option_is_documented_and_checked_where_it_has_a_range(name):
    entry = SAMPLERS.get(name)
    assert entry.__doc__ and entry.name == name
    for f in dataclasses.fields(entry):
        assert f.metadata.get("doc"), f"{name}.{f.name} has no documentation"
        if f.metadata.get("check") is not None and f.type in (int, float, "int", "float"):
            with pytest.raises(ConfigError, match=f.name):
                entry(**{**NEEDS.get(name, {}), f.name: -1})


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_draws_scored_samples_of_the_target(target, name):
    if name == "filter":  # it keeps or drops, so its target is made of constraints only
        target = (target.prior * bl.Forbid("bad")).given(PROMPTS, max_new_tokens=3)
    draws = bl.sample(target, name, n=6, seed=1, **NEEDS.get(name, {}))
    assert draws.method == name and draws.requested == 6
    samples = draws.samples
    assert samples.prompts == PROMPTS and set(samples.prompt_index.tolist()) == {0, 1}
    again = target.score_samples(target.prior.sample(PROMPTS, 1, 3, seed=0), target.prior)  # scoring is the target's
    assert set(again.stats) == set(samples.stats)
    assert torch.allclose(samples.log_phi, target.potential.log_phi(samples.stats), equal_nan=True)
    w = draws.weights()
    for c in range(len(PROMPTS)):
        assert w[samples.prompt_index == c].sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_stops_where_nothing_has_target_weight(target, name):
    nothing = (target.prior * bl.StartsWith(text="zzz")).given(PROMPTS, max_new_tokens=3)
    rule = r"for prompt\(s\) \[.*\] \(no sample satisfies the constraints of the target\)"
    with pytest.raises(NoSupport, match=rule):
        bl.sample(nothing, name, n=4, seed=0, **{k: v for k, v in NEEDS.get(name, {}).items() if k != "reward_max"},
                  **({"budget": 8} if "budget" in {f.name for f in dataclasses.fields(SAMPLERS.get(name))} else {}))


def test_an_old_spelling_names_the_same_sampler_everywhere(target):
    """`best-of-n` (the name before every sampler took underscores) still works, unlisted: in Python, in the
    check before torch (the schema), and in the draws it returns."""
    from bayeslm.preflight import canonical, check_entry

    assert SAMPLERS.get("best-of-n") is SAMPLERS.get("best_of_n") and "best-of-n" not in SAMPLERS.names()
    assert SAMPLERS.aliases() == {"best-of-n": "best_of_n"} and canonical("sampler", "best-of-n") == "best_of_n"
    check_entry("sampler", {"best-of-n": {"candidates": 2}}, "--method")
    with pytest.raises(ValueError, match="candidates"):
        check_entry("sampler", {"best-of-n": {"candidates": "many"}}, "--method")
    assert bl.sample(target, "best-of-n", n=4, seed=0).method == "best_of_n"
