"""Guaranteed generation (GUARD) checked exactly on the toy: KL(g‖g′) = KL(g‖a′) + log AR holds to 1e-6 by
enumeration, the estimates agree with the enumerated values, and `bl.guard` and `bayeslm guard` train a
proposal that accepts more often than the prior while every sample kept satisfies the constraint."""

import json
import math

import pytest
import yaml
from conftest import PROMPTS, run, write

import bayeslm as bl
from bayeslm.measurement.exact import Exact
from bayeslm.measurement.guard import FIGURES, exact_figures, guarded
from bayeslm.modelling.potentials import Constraint
from bayeslm.modelling.rewards import keyword

TOY_CONSTRAINT = {"prior": {"toy": {"seed": 0, "train_steps": 200}}, "prompts": PROMPTS, "max_new_tokens": 3,
                  "potentials": [{"constraint": {"predicate": {"keyword": ["good"]}}}]}


@pytest.fixture(scope="module")
def target(prior):
    return (prior * Constraint(keyword(["good"]))).given(PROMPTS, max_new_tokens=3)


@pytest.fixture(scope="module")
def exact(target):
    return Exact(target)


def test_the_identity_holds_exactly_and_the_prior_filtered_is_the_target(target, exact, prior):
    for proposal in (prior, prior.view(warp=bl.Warp(temperature=1.5)), prior.view(warp=bl.Warp(temperature=0.7))):
        figures = exact_figures(exact, proposal)  # KL(g‖g′) summed from g′ itself, not through the identity
        assert figures["kl_target_filtered"] == pytest.approx(
            figures["kl_target_proposal"] + figures["log_acceptance"], abs=1e-6)
        assert figures["acceptance"] >= math.exp(-figures["kl_target_proposal"])  # Jensen: AR ≥ e^−KL(g‖a′)
        assert 0 <= figures["kl_target_filtered"] <= figures["kl_target_proposal"]
    figures = exact_figures(exact, prior)
    assert figures["kl_target_filtered"] == pytest.approx(0, abs=1e-9)
    assert figures["acceptance"] == pytest.approx(exact.log_z.exp().mean().item(), abs=1e-9)  # AR = Z


def test_the_estimates_agree_with_the_enumerated_values(target, exact, prior):
    proposal = prior.view(warp=bl.Warp(temperature=1.5), name="prior at T = 1.5")
    result = guarded(proposal, target, 1024, seed=0, exact=exact)
    for key, _ in FIGURES:
        estimate, truth = result[key], result.exact[key]
        assert not estimate.unreliable and abs(estimate.value - truth) <= 3 * estimate.stderr, (key, estimate, truth)
    at_prior = guarded(prior, target, 256, seed=0)
    assert at_prior["kl_target_filtered"].value == pytest.approx(0, abs=1e-12)  # w = b exactly: no noise at all
    assert at_prior["kl_target_filtered"].stderr == pytest.approx(0, abs=1e-12)


def test_guard_trains_a_proposal_that_accepts_more_and_keeps_only_what_satisfies(target, exact):
    result = bl.guard(target, steps=30, lr=3e-3, samples_per_prompt=32, eval_n=0, quiet=True, n=256, exact=True,
                      correct="imh")
    prior, trained = result.prior.exact, result.trained.exact
    assert trained["acceptance"] > 2 * prior["acceptance"]
    assert trained["kl_target_proposal"] < prior["kl_target_proposal"] / 2  # DPG lowered the forward KL
    assert trained["kl_target_filtered"] == pytest.approx(
        trained["kl_target_proposal"] + trained["log_acceptance"], abs=1e-6)
    assert result.satisfied == 1.0 and len(result.samples) == 512
    assert result.corrected.method == "imh" and len(result.corrected) == 512
    assert "accepts" in str(result) and result.run.target.prompts == target.prompts


def test_guard_from_the_command_line_with_a_target_file_a_config_and_a_trained_model(tmp_path, capsys):
    target_file = write(tmp_path / "target.yaml", TOY_CONSTRAINT)
    code, out, err = run(capsys, "guard", target_file, "--out", tmp_path / "run", "--set", "steps=4",
                         "--set", "eval_n=0", "-n", "64", "--exact", "--json", "--quiet")
    assert code == 0, err
    document = json.loads(out)
    assert document["satisfied"] == 1.0
    for side in ("prior", "trained"):
        figures = document[side]["exact"]
        assert figures["kl_target_filtered"] == pytest.approx(
            figures["kl_target_proposal"] + figures["log_acceptance"], abs=1e-6)
    saved = json.loads((tmp_path / "run" / "guard.json").read_text())
    assert saved["trained"]["acceptance"] == document["trained"]["acceptance"]
    kept = [json.loads(line) for line in (tmp_path / "run" / "guard_samples.jsonl").read_text().splitlines()]
    assert len(kept) == 128 and all("good" in r["text"].split() for r in kept)
    assert "dpg" in yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["objective"]

    config = write(tmp_path / "train.yaml", {"target": "target.yaml", "objective": {"fdpg": {"divergence": "js"}},
                                             "steps": 2, "samples_per_prompt": 32, "eval_n": 0})
    code, out, err = run(capsys, "guard", config, "--out", tmp_path / "fdpg", "-n", "32", "--correct", "qrs",
                         "--tv", "0.1", "--quiet")
    assert code == 0, err
    assert "corrected from the trained proposal" in out and "qrs" in out
    assert "fdpg" in yaml.safe_load((tmp_path / "fdpg" / "config.yaml").read_text())["objective"]

    code, out, err = run(capsys, "guard", target_file, "--model", tmp_path / "run" / "model", "--out",
                         tmp_path / "again", "-n", "32", "--quiet")
    assert code == 0, err
    assert not (tmp_path / "again" / "metrics.jsonl").exists() and (tmp_path / "again" / "guard.json").exists()


def test_guard_refuses_what_it_cannot_do_before_training(tmp_path, capsys):
    reward = dict(TOY_CONSTRAINT, potentials=[{"exponential": {"reward": "sentiment", "beta": 0.5}}])
    code, _, err = run(capsys, "guard", write(tmp_path / "reward.yaml", reward), "--out", tmp_path / "r", "--quiet")
    assert code == 2 and "only of hard constraints" in err and not (tmp_path / "r").exists()
    target_file = write(tmp_path / "target.yaml", TOY_CONSTRAINT)
    code, _, err = run(capsys, "guard", target_file, "--out", tmp_path / "t", "--tv", "0.1")
    assert code == 2 and "--tv goes with --correct qrs" in err
    code, _, err = run(capsys, "guard", target_file, "--out", tmp_path / "t", "--set", "stepz=3")
    assert code == 2 and "stepz" in err
