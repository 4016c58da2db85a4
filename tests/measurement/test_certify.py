"""Certified bounds from exact samples (bidirectional Monte Carlo): ELBO ≤ log Z ≤ EUBO, each side a plain mean,
checked against the enumerated log Z on the toy."""

import json
import math

import pytest

import bayeslm as bl
from bayeslm.cli import main
from bayeslm.measurement.exact import Exact
from bayeslm.modelling.target_file import load_target

TARGETS = {"sentiment": ("examples/toy_sentiment.yaml", 1.0), "constraint": ("examples/toy_constraint.yaml", None)}


@pytest.fixture(scope="module")
def models():
    """The prior, and a toy network trained on other data: far from every target."""
    return {"prior": None, "far": bl.load_lm({"toy": {"seed": 1, "train_steps": 200}})}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_bounds_hold_against_the_exact_log_z(name, models):
    path, reward_max = TARGETS[name]
    target = load_target(path)
    exact = Exact(target)
    for model in (m or target.prior for m in models.values()):
        truth = exact.scorecard(model)
        jeffreys = truth["kl_model_target"] + truth["kl_target_model"]
        for seed in range(4):
            cert = bl.certify(model, target, 128, reward_max=reward_max, seed=seed)
            assert cert.exact_samples == [128, 128] and not cert.notes
            lower, upper = cert["elbo"], cert["eubo"]
            assert lower.value - lower.stderr <= truth["log_z"] <= upper.value + upper.stderr
            assert cert["log_z_lower"].value - 3 * cert["log_z_lower"].stderr <= truth["log_z"]
            assert truth["log_z"] <= cert["log_z_upper"].value + 3 * cert["log_z_upper"].stderr
            if math.isinf(jeffreys):  # q puts mass where π* has none: the ELBO is −inf, and so the estimate
                assert cert["jeffreys"].value == math.inf and lower.value == -math.inf
            else:
                assert abs(cert["jeffreys"].value - jeffreys) <= 3 * cert["jeffreys"].stderr
                assert cert["jeffreys"].value == pytest.approx(upper.value - lower.value)


def test_evaluate_certify_reports_the_bounds_beside_the_exact_values(capsys):
    assert main(["evaluate", "--target", "examples/toy_sentiment.yaml", "-n", "64", "--certify", "--reward-max",
                 "1", "--exact", "--json", "--quiet"]) == 0
    card = json.loads(capsys.readouterr().out)
    certified = card["certified"]
    assert certified["exact_samples"] == [64, 64] and certified["log_bound"] == 2.0  # M = exp(1/β), β = 0.5
    assert certified["exact"]["log_z"] == card["exact"]["log_z"]
    assert certified["elbo"]["value"] == pytest.approx(card["elbo"]["value"])  # the same samples of q
    assert certified["elbo"]["value"] <= card["exact"]["log_z"] <= certified["eubo"]["value"]
    assert main(["evaluate", "--target", "examples/toy_sentiment.yaml", "-n", "64", "--certify", "--reward-max",
                 "1", "--quiet"]) == 0
    assert "upper EUBO = E_π*[log w]" in capsys.readouterr().out


def test_a_bound_that_is_not_known_is_refused_before_sampling_naming_the_option(capsys):
    assert main(["evaluate", "--target", "examples/toy_sentiment.yaml", "--certify"]) == 2
    err = capsys.readouterr().err
    assert "--certify: rejection sampling needs a bound on the reward" in err and "--reward-max" in err
    assert main(["evaluate", "--target", "examples/toy_sentiment.yaml", "--reward-max", "1"]) == 2
    assert "--reward-max and --log-bound go with --certify" in capsys.readouterr().err


def test_a_prompt_without_exact_samples_has_no_upper_bound_and_says_why():
    target = load_target("examples/toy_sentiment.yaml")
    cert = bl.certify(target.prior, target, 32, log_bound=40.0, budget=40)  # acceptance ~e⁻⁴⁰: nothing accepted
    assert cert["eubo"].value == math.inf and cert["elbo"].value < math.inf
    assert "no upper bound" in cert.notes[0] and "raise the budget" in cert.notes[0]
