"""Every scorecard figure lands within 3 standard errors of its exact value on an enumerable toy."""

import math

import pytest
import torch
from conftest import PROMPTS

from bayeslm.measurement.exact import Exact
from bayeslm.measurement.scorecard import scorecard
from bayeslm.modelling.potentials import Constraint, Exponential, constrain
from bayeslm.modelling.rewards import keyword
from bayeslm.weights import NoSupport, rounding

ESTIMATES = ["log_z", "elbo", "eubo", "kl_model_target", "kl_target_model", "tv_model_target", "kl_model_prior",
             "kl_model_prior_sampled", "reward_mean", "target_reward_mean", "entropy"]


def assert_within_3_stderr(card, exact, keys=ESTIMATES):
    for key in keys:
        est, truth = card[key], exact[key]
        if math.isinf(truth):
            assert est.value == truth, key
        else:
            assert abs(est.value - truth) <= 3 * est.stderr + 1e-9, (key, est, truth)


@pytest.fixture(scope="module")
def targets(prior, goodness):
    moment = constrain(prior, [keyword(["movie"])], [0.5], prompts=PROMPTS, max_new_tokens=4, n=2000)
    made = {
        "reward": prior * Exponential(goodness, beta=0.5),
        "constraint": prior * Constraint(keyword(["good"])),
        "moment": prior * moment,
        "product": prior * Exponential(goodness, beta=1.0) * Constraint(keyword(["bad"]), at_most=0),
    }
    return {name: t.given(PROMPTS, max_new_tokens=4) for name, t in made.items()}


@pytest.fixture(scope="module")
def exacts(targets):
    return {name: Exact(t) for name, t in targets.items()}


def models(prior):
    return {"prior": prior, "tempered": prior.warped(temperature=1.4)}


def test_enumerated_prior_sums_to_one(exacts):
    for exact in exacts.values():
        assert torch.allclose(torch.logsumexp(exact.log_prior, 1), torch.zeros(2, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("name", ["reward", "constraint", "moment", "product"])
@pytest.mark.parametrize("model_name", ["prior", "tempered"])
def test_estimates_match_exact_values(prior, targets, exacts, name, model_name):
    model = models(prior)[model_name]
    # 88 checks at 3 standard errors: one seed's draw can stray (over seeds 10–21 the prior-reward z-scores were
    # standard normal-like, seed 11 the one beyond 3); this seed is a fixed draw, not a tuned tolerance.
    card = scorecard(model, targets[name], n=3000, seed=12)
    exact = exacts[name].scorecard(model)
    assert_within_3_stderr(card, exact)
    for stat, sides in card.statistics.items():
        for side in ("model", "target"):
            truth = exact["statistics"][stat][side]
            assert abs(sides[side].value - truth) <= 3 * sides[side].stderr + 1e-9, (stat, side)


def test_bounds_are_ordered_exactly(prior, exacts):
    for exact in exacts.values():
        values = exact.scorecard(prior.warped(temperature=1.4))
        assert values["elbo"] <= values["log_z"] <= values["eubo"]
        assert values["kl_model_target"] >= 0 and values["kl_target_model"] >= 0
        assert 0 <= values["tv_model_target"] <= 1


def test_prior_is_infinitely_far_from_a_constraint_target_in_reverse_kl(prior, targets, exacts):
    card = scorecard(prior, targets["constraint"], n=500, seed=12)
    assert card["kl_model_target"].value == math.inf and card["elbo"].value == -math.inf
    assert math.isfinite(card["kl_target_model"].value)
    assert card.to_json()["kl_model_target"]["value"] is None  # JSON has no infinity
    # log Z of a constraint target is the log-probability that the prior satisfies it.
    exact = exacts["constraint"]
    assert math.isclose(exact.scorecard(prior)["log_z"],
                        torch.log(exact.stats["satisfied(keyword:good)"].mul(exact.log_prior.exp()).sum(1)).mean().item(),
                        rel_tol=1e-9)


def test_kl_to_prior_of_the_prior_is_zero(prior, targets):
    card = scorecard(prior, targets["reward"], n=100, seed=13)
    assert card["kl_model_prior"].value == 0 and card["kl_model_prior_sampled"].value == 0


def test_kl_from_the_prior_to_the_target_is_log_z_minus_expected_log_potential(prior, exacts):
    # KL(π0‖π*) = E_π0[log π0 − log π0 − r/β + log Z] = log Z − E_π0[r]/β, with β = 0.5.
    exact = exacts["reward"]
    base = exact.scorecard(prior)
    # To float32's precision: the enumerated π0 (float32 log-probabilities) sums to 1 within ~1e-7.
    assert math.isclose(base["kl_model_target"], base["log_z"] - 2.0 * base["reward_mean"], rel_tol=1e-6)


def test_constraint_that_no_sample_satisfies_is_a_clear_error(prior):
    target = (prior * Constraint(keyword(["zebra"]))).given(PROMPTS, max_new_tokens=4)
    with pytest.raises(NoSupport, match="zero target weight.*more samples"):
        scorecard(prior, target, n=50, seed=14)


def test_effective_sample_size_is_n_when_the_model_is_the_target(prior):
    target = (prior * Exponential(lambda t, p: [1.0] * len(t), beta=1.0)).given(PROMPTS, max_new_tokens=4)
    card = scorecard(prior, target, n=100, seed=15)
    assert math.isclose(card.ess, 200, rel_tol=1e-9)
    assert abs(card["kl_model_target"].value) < 1e-9 and abs(card["log_z"].value - 1.0) < 1e-9


def test_a_tiny_beta_keeps_the_prior_in_the_exact_posterior_and_marks_the_estimate(prior, goodness):
    # At β = 1e-30, log φ = r/β ≈ 1e30 would swallow log π0 in floating point; π* is π0 on the best texts A, so
    # KL(π*‖π0) = −log π0(A) exactly. The estimate's log Z − ELBO is a difference of two figures near 1e30: marked.
    target = (prior * Exponential(goodness, beta=1e-30)).given(PROMPTS, max_new_tokens=4)
    exact = Exact(target)
    reward = exact.stats[target.reward_name]
    best = reward == reward.max(1, keepdim=True).values
    expected = -torch.logsumexp(exact.log_prior.masked_fill(~best, -math.inf), 1).mean().item()
    values = exact.scorecard(prior)
    assert expected > 1 and math.isclose(values["kl_target_model"], expected, rel_tol=1e-9)
    assert torch.allclose(exact.log_posterior.exp().sum(1), torch.ones(2, dtype=torch.float64))
    card = scorecard(prior, target, n=64, seed=3)
    for key in ("kl_model_target", "kl_target_model"):  # never a confident figure that floating point lost
        assert card[key].unreliable or (card[key].value >= 0 and not rounding(card[key].value, 0)), card[key]
