"""Training towards a verifier posterior π* ∝ π0·1[correct], checked exactly on the toy: its log Z is the log of the
prior's pass@1, and DPG (forward KL) and f-DPG with an α-divergence (α-DPG) each end within 0.02 nats of it in the
divergence they minimise."""

import math

import pytest
import torch

import bayeslm as bl
from bayeslm.measurement.exact import Exact
from bayeslm.measurement.pass_at_k import pass_at_k_one


@pytest.fixture(scope="module")
def target():
    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 200}})
    prompts = ["", "the movie"]
    return (prior * bl.Constraint(bl.rewards.keyword(["good"]))).given(prompts, max_new_tokens=2)


def alpha_divergence(exact: Exact, model, alpha: float) -> float:
    """D_α(q‖π*) = Σ_x π*(x)·f_α(q(x)/π*(x)), f_α(t) = (t^α − α·t − (1 − α))/(α(α − 1)), mean over prompts; where
    π* = 0 the term is its limit q(x)/(1 − α)."""
    q, p = exact.log_probs(model).exp(), exact.log_posterior.exp()
    inside = p > 0
    t = torch.where(inside, q / torch.where(inside, p, 1.0), 1.0)
    f = (t ** alpha - alpha * t - (1 - alpha)) / (alpha * (alpha - 1))
    return (torch.where(inside, p * f, q / (1 - alpha))).sum(1).mean().item()


def test_the_verifier_posterior_has_log_z_the_log_of_the_prior_pass_at_1(target):
    exact = Exact(target)
    correct = exact.stats[target.reward_name] > 0
    pass_1 = (exact.log_prior.exp() * correct).sum(1)
    assert torch.allclose(exact.log_z, pass_1.log(), atol=1e-9) and (pass_1 < 0.9).all()
    assert pass_at_k_one(10, 3, 1) == pytest.approx(0.3)  # the estimator's pass@1 is the fraction correct


@pytest.mark.slow
@pytest.mark.parametrize("objective, divergence", [
    (bl.DPG(proposal="model"), lambda e, m: e.scorecard(m)["kl_target_model"]),
    (bl.FDPG(proposal="model", divergence="alpha", alpha=0.5), lambda e, m: alpha_divergence(e, m, 0.5)),
], ids=["dpg", "alpha-0.5"])
def test_each_objective_reaches_the_verifier_posterior_in_its_own_divergence(target, objective, divergence):
    run = bl.train(target, objective, steps=200, lr=3e-3, samples_per_prompt=32, schedule="linear",
                   max_grad_norm=None, eval_n=0, quiet=True)
    exact = Exact(target)
    assert divergence(exact, run.model) < 0.02
    assert divergence(exact, target.prior) > 0.1  # it had somewhere to go


def test_the_alpha_divergence_meets_both_kls_at_its_ends(target):
    # f′_α → the reverse KL's log t + const at α = 1 and the forward KL's −1/t + const at α = 0: the same gradient.
    from bayeslm.training.objectives.fdpg import DIVERGENCES, alpha_prime

    log_t = torch.linspace(-3, 3, 13, dtype=torch.float64)
    assert torch.allclose(alpha_prime(log_t, 1.0), DIVERGENCES["rkl"](log_t) - 1)
    assert torch.allclose(alpha_prime(log_t, 0.0), DIVERGENCES["kl"](log_t) + 1)
    assert torch.allclose(alpha_prime(log_t, 1 - 1e-9), log_t, atol=1e-6) and math.isfinite(alpha_prime(log_t, 2)[0])
