"""Training towards the best-of-n target, checked exactly on the toy: KL-RL (variational best-of-n, Amini et al.
2024), DPG and f-DPG's Jeffreys divergence (BOND, Sessa et al. 2024) each end within 0.02 nats of π_BoN in the
divergence it minimises."""

import pytest

import bayeslm as bl
from bayeslm.measurement.exact import Exact


@pytest.fixture(scope="module")
def target():
    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 200}})
    prompts = ["", "the movie"]
    return (prior * bl.best_of(prior, bl.rewards.keyword(["good"]), 4, prompts=prompts, max_new_tokens=2)).given(
        prompts, max_new_tokens=2)


@pytest.mark.parametrize("objective, divergence", [
    (bl.KLRL(), lambda c: c["kl_model_target"]),  # vBoN: the reverse KL
    (bl.DPG(proposal="model"), lambda c: c["kl_target_model"]),  # the forward KL
    (bl.FDPG(proposal="model", divergence="jeffreys"), lambda c: c["kl_model_target"] + c["kl_target_model"]),
], ids=["klrl", "dpg", "jeffreys"])
def test_each_objective_reaches_the_best_of_n_target_in_its_own_divergence(target, objective, divergence):
    run = bl.train(target, objective, steps=200, lr=3e-3, samples_per_prompt=32, schedule="linear",
                   max_grad_norm=None, eval_n=0, quiet=True)
    exact = Exact(target)
    assert divergence(exact.scorecard(run.model)) < 0.02
    assert divergence(exact.scorecard(target.prior)) > 0.1  # it had somewhere to go
