"""Filtering by the constraints (GUARD's sampler) checked exactly on the toy: from the prior it draws the target
g itself, from another proposal a′ it draws g′ = a′·b/AR, and its KL(g‖g′) agrees with the enumerated value."""

import pytest
import torch
from conftest import PROMPTS, chi_square_p, rows_of

import bayeslm as bl
from bayeslm.config import ConfigError
from bayeslm.distributions.toy import ToyConfig, toy_lm
from bayeslm.measurement.exact import Exact
from bayeslm.measurement.guard import exact_figures
from bayeslm.modelling.potentials import Constraint, Exponential
from bayeslm.modelling.rewards import keyword

SIGNIFICANCE = 1e-3


@pytest.fixture(scope="module")
def target(prior):
    return (prior * Constraint(keyword(["good"]))).given(PROMPTS, max_new_tokens=3)


@pytest.fixture(scope="module")
def other():
    """A proposal that is not the prior: a toy trained from another seed."""
    return toy_lm(ToyConfig(seed=3, train_steps=200))


def test_filtering_the_prior_draws_the_target_exactly(target):
    draws = bl.sample(target, "filter", n=1500, seed=1)
    exact = Exact(target)
    assert draws.counts() == [1500, 1500]
    for c in range(2):
        assert chi_square_p(rows_of(draws, c), exact.log_posterior[c].exp(), exact.sequences) > SIGNIFICANCE
    assert draws.figures["kl_target_filtered"].value == 0 and draws.figures["kl_target_filtered"].stderr == 0
    assert not draws.notes


def test_filtering_another_proposal_draws_it_cut_to_the_constraint(target, other):
    draws = bl.sample(target, "filter", n=1500, proposal=other, seed=2)
    exact = Exact(target)
    log_q = exact.log_probs(other)
    satisfied = torch.isfinite(exact.log_target)
    for c in range(2):
        cut = log_q[c].exp() * satisfied[c]  # a′·b, normalised by the χ² test
        assert chi_square_p(rows_of(draws, c), cut / cut.sum(), exact.sequences) > SIGNIFICANCE
    assert all(torch.isfinite(draws.samples.log_phi))  # every sample satisfies the constraint
    kl = draws.figures["kl_target_filtered"]
    truth = exact_figures(exact, other)["kl_target_filtered"]
    assert truth > 0.5  # far enough from g that the check means something
    assert kl.unreliable or abs(kl.value - truth) <= 3 * kl.stderr, (kl, truth)
    assert "not the target" in draws.notes[0]
    assert draws.acceptance_rate == pytest.approx(exact_figures(exact, other)["acceptance"], abs=0.03)


def test_filtering_refuses_a_target_it_would_not_sample(prior):
    target = (prior * Exponential(keyword(["good"]), beta=0.5) * Constraint(keyword(["movie"]))).given(PROMPTS)
    with pytest.raises(ConfigError, match="only of hard constraints.*Exponential"):
        bl.sample(target, "filter", n=4)
