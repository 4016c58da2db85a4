"""β planning predicts, from prior samples alone, the exact figures of the KL-RL optimum π*_β on a toy."""

import json

import pytest
import yaml
from conftest import PROMPTS

from bayeslm.cli import main
from bayeslm.measurement.exact import Exact
from bayeslm.measurement.plan import NoReward, Plan, plan
from bayeslm.modelling.potentials import Constraint, Exponential
from bayeslm.modelling.rewards import keyword

BETAS = [0.5, 1.0, 2.0, 4.0]


def exact_figures(prior, goodness, beta, *rest):
    """E_π*[r], KL(π*‖π0) and log Z of π*_β ∝ π0·exp(r/β)·(rest) by enumeration."""
    potential = Exponential(goodness, beta)
    for factor in rest:
        potential = potential * factor
    card = Exact((prior * potential).given(PROMPTS, max_new_tokens=3)).scorecard(prior)
    return {"target_reward_mean": card["target_reward_mean"], "kl_target_prior": card["kl_target_model"],
            "log_z": card["log_z"]}


@pytest.fixture(scope="module")
def planner(prior, goodness):
    return Plan((prior * Exponential(goodness, beta=1.0)).given(PROMPTS, max_new_tokens=3), n=4000, seed=1)


def assert_within_3_stderr(prediction, exact):
    for key, truth in exact.items():
        estimate = getattr(prediction, key)
        assert abs(estimate.value - truth) <= 3 * estimate.stderr, (prediction.beta, key, estimate, truth)


@pytest.mark.parametrize("beta", BETAS)
def test_predictions_match_the_exact_posterior_of_each_beta(prior, goodness, planner, beta):
    prediction = planner.at(beta)
    assert prediction.trusted and 0 < prediction.ess <= 8000
    assert_within_3_stderr(prediction, exact_figures(prior, goodness, beta))


def test_other_factors_of_the_target_stay_in_the_posterior(prior, goodness):
    movie = Constraint(keyword(["movie"]))
    target = (prior * Exponential(goodness, beta=0.3) * movie).given(PROMPTS, max_new_tokens=3)
    prediction = plan(target, [1.0], n=4000, seed=2)[0]
    assert_within_3_stderr(prediction, exact_figures(prior, goodness, 1.0, movie))


def test_the_beta_for_a_kl_budget_meets_it_exactly(prior, goodness, planner):
    beta = planner.beta_for_kl(0.3)
    prediction = planner.at(beta)
    assert prediction.kl_target_prior.value == pytest.approx(0.3, abs=1e-9)
    exact = exact_figures(prior, goodness, beta)["kl_target_prior"]
    assert abs(exact - 0.3) <= 3 * prediction.kl_target_prior.stderr


def test_the_beta_for_a_target_reward_meets_it_exactly(prior, goodness, planner):
    beta = planner.beta_for_reward(0.8)
    prediction = planner.at(beta)
    exact = exact_figures(prior, goodness, beta)["target_reward_mean"]
    assert abs(exact - 0.8) <= 3 * prediction.target_reward_mean.stderr


def test_goals_out_of_reach_are_clear_errors(planner):
    with pytest.raises(ValueError, match="out of reach.*ranges from"):
        planner.beta_for_reward(5.0)  # goodness is at most 3 in three tokens
    with pytest.raises(ValueError, match="out of reach"):
        planner.beta_for_kl(-1.0)


def test_a_tilt_onto_few_samples_is_flagged(planner):
    assert not planner.at(0.01).trusted  # e^(r/0.01): the few best samples carry all the weight


def test_a_target_without_a_reward_cannot_be_planned(prior):
    with pytest.raises(NoReward, match="no exponential potential"):
        Plan((prior * Constraint(keyword(["good"]))).given(PROMPTS, max_new_tokens=3), n=10)


# ----- command line ----------------------------------------------------------------------------------------------

def write_target(tmp_path, potentials):
    path = tmp_path / "target.yaml"
    path.write_text(yaml.safe_dump({"prior": {"toy": {"seed": 0, "train_steps": 50}}, "prompts": PROMPTS,
                                    "max_new_tokens": 3, "potentials": potentials}))
    return str(path)


def test_plan_json_gives_each_beta_and_the_solved_ones(tmp_path, capsys):
    target = write_target(tmp_path, [{"exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5}}])
    code = main(["plan", "--target", target, "--betas", "0.01,0.3,1", "-n", "300", "--kl-budget", "0.2", "--json"])
    out = capsys.readouterr()
    assert code == 0
    result = json.loads(out.out)
    assert [row["beta"] for row in result["betas"]] == [0.01, 0.3, 1.0]
    for row in result["betas"] + [result["kl_budget"]]:
        assert set(row) >= {"beta", "target_reward_mean", "kl_target_prior", "log_z", "ess"}
        for key in ("target_reward_mean", "kl_target_prior", "log_z"):
            assert set(row[key]) == {"value", "stderr"}
    assert result["kl_budget"]["kl_target_prior"]["value"] == pytest.approx(0.2, abs=1e-6)
    rewards = [row["target_reward_mean"]["value"] for row in result["betas"]]
    assert rewards == sorted(rewards, reverse=True)  # a smaller β tilts harder


def test_plan_table_warns_when_the_ess_is_too_small(tmp_path, capsys):
    target = write_target(tmp_path, [{"exponential": {"reward": {"keyword": ["good"]}, "beta": 1}}])
    code = main(["plan", "--target", target, "--betas", "0.01,1", "-n", "40"])  # β = 0.01: only "good" counts
    out = capsys.readouterr()
    assert code == 0 and "KL(π*‖π0)" in out.out
    assert "warning: at beta=0.01" in out.err and "not to be trusted" in out.err


def test_plan_errors_exit_2(tmp_path, capsys):
    target = write_target(tmp_path, [{"constraint": {"predicate": {"keyword": ["good"]}}}])
    assert main(["plan", "--target", target, "-n", "10"]) == 2
    assert "bayeslm: error:" in capsys.readouterr().err
    assert main(["plan", "--target", target, "--betas", "0.1,x"]) == 2
    assert "--betas" in capsys.readouterr().err
