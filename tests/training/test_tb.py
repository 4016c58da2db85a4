"""Trajectory balance with a learned log Z (Hu et al., ICLR 2024), checked exactly on the toy: the learned log Z
reaches the enumerated log Z and the model the target, on-policy and from prior samples alone (off-policy)."""

import json

import pytest
import yaml
from conftest import TOY_TARGET

import bayeslm as bl
from bayeslm.cli import main
from bayeslm.measurement.exact import Exact


@pytest.fixture(scope="module")
def target():
    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 200}})
    return (prior * bl.Exponential(bl.rewards.keyword(["good"]), beta=0.5)).given(["", "the movie"],
                                                                                  max_new_tokens=2)


@pytest.mark.parametrize("proposal", ["model", "prior"])
def test_the_learned_log_z_and_the_model_reach_the_target(target, proposal):
    run = bl.train(target, bl.TB(proposal=proposal), steps=150, lr=3e-3, samples_per_prompt=32, schedule="linear",
                   max_grad_norm=None, eval_n=0, quiet=True)
    exact = Exact(target)
    errors = (run.objective.learned_log_z - exact.log_z).abs()
    assert errors.max() < 0.02, (run.objective.learned_log_z.tolist(), exact.log_z.tolist())
    truth = exact.scorecard(run.model)
    assert truth["kl_model_target"] < 0.02 and truth["kl_target_model"] < 0.02
    assert run.metrics[-1]["log_z_learned"] == pytest.approx(run.objective.learned_log_z.mean().item())


def test_tb_from_yaml_resumes_with_its_learned_log_z(tmp_path):
    config = tmp_path / "tb.yaml"
    config.write_text(yaml.safe_dump({"target": TOY_TARGET, "objective": {"tb": {"proposal": "prior"}}, "steps": 4,
                                      "checkpoint_every": 2, "eval_n": 0, "lr": 3e-3}))
    assert main(["train", str(config), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    assert main(["train", str(config), "--out", str(tmp_path / "half"), "--quiet", "--set", "steps=2"]) == 0
    assert main(["train", str(config), "--out", str(tmp_path / "half"), "--quiet", "--resume"]) == 0
    whole, half = ([json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                   for run in ("whole", "half"))
    assert [r["log_z_learned"] for r in whole] == [r["log_z_learned"] for r in half]  # the state and its moments
