"""Extension without editing the package: an objective and a sampler defined only in `extension_fixtures` train
and sample through the Python API and through the command line, by dotted path."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import PROMPTS

import bayeslm as bl
from bayeslm.cli import main

OBJECTIVE = "extension_fixtures:SelfNormalisedForwardKL"
SAMPLER = "extension_fixtures:Weighted"
TOY = {"prior": {"toy": {"seed": 0, "train_steps": 200}}, "prompts": PROMPTS, "max_new_tokens": 3,
       "potentials": [{"exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5}}]}


@pytest.fixture(autouse=True)
def fixtures_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.fixture
def target():
    # A prior of its own: training freezes the prior's weights, which the session's shared prior must keep.
    prior = bl.toy_lm(bl.ToyConfig(seed=0, train_steps=200))
    return (prior * bl.Exponential(bl.rewards.keyword(["good"]), beta=0.5)).given(PROMPTS, max_new_tokens=3)


def test_an_objective_of_ones_own_trains_towards_the_target(target):
    from extension_fixtures import SelfNormalisedForwardKL

    exact = bl.Exact(target)
    before = exact.scorecard(target.prior)["kl_target_model"]
    run = bl.train(target, SelfNormalisedForwardKL(scale=1.0), steps=15, lr=3e-3, samples_per_prompt=16,
                   prompts_per_step=2, eval_n=0, quiet=True)
    after = exact.scorecard(run.model)["kl_target_model"]
    assert run.directory is None and len(run.metrics) == 15 and run.scorecard is None
    assert after < 0.8 * before, (before, after)
    with pytest.raises(ValueError, match="scale: must be > 0"):
        SelfNormalisedForwardKL(scale=-1.0)


def test_an_objective_of_ones_own_trains_from_yaml_by_dotted_path(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"target": TOY, "objective": {OBJECTIVE: {"scale": 2.0}}, "steps": 3,
                                      "samples_per_prompt": 4, "eval_n": 8}))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scorecard"]["n"] == 16
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["objective"] == {OBJECTIVE: {"scale": 2.0}}  # the run's record names it so it loads back
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2, 3]


def test_a_sampler_of_ones_own_samples_through_the_api(target):
    exact = bl.Exact(target)
    draws = bl.sample(target, SAMPLER, n=2000, rounds=2, seed=3)
    assert draws.method == "weighted" and draws.counts() == [2000, 2000]
    # Its weighted samples estimate the target's mean reward (self-normalised importance sampling).
    reward = draws.samples.reward
    weights = draws.weights()
    for c in range(len(PROMPTS)):
        rows = draws.samples.prompt_index == c
        estimate = (weights[rows] * reward[rows]).sum().item()
        truth = (exact.log_posterior[c].exp() * exact.stats["keyword:good"][c]).sum().item()
        assert estimate == pytest.approx(truth, abs=0.05)


def test_a_sampler_of_ones_own_samples_from_the_command_line(tmp_path, capsys):
    target_file = tmp_path / "target.yaml"
    target_file.write_text(yaml.safe_dump(TOY))
    out = tmp_path / "samples.jsonl"
    assert main(["sample", "--target", str(target_file), "--method", SAMPLER, "--set", "rounds=2", "-n", "6",
                 "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "weighted"
    assert len(out.read_text().splitlines()) == 12
    # A registered sampler's flag given with another sampler names the sampler it belongs to.
    assert main(["sample", "--target", str(target_file), "--method", SAMPLER, "--chains", "3", "-n", "6"]) == 2
    assert "--chains is an option of imh, mh, not of extension_fixtures:Weighted" in capsys.readouterr().err


def test_unknown_names_list_what_the_registries_hold():
    with pytest.raises(ValueError, match="unknown objective 'ppo'; expected one of dpg, fdpg, klrl, rl"):
        bl.objectives.OBJECTIVES.get("ppo")
    with pytest.raises(ValueError, match="unknown sampler 'mcmc'; expected one of ancestral, best_of_n, filter, imh"):
        bl.sample(None, "mcmc")
