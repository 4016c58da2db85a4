"""Every importance-weighted figure says when it cannot be trusted: the Pareto k̂ of the largest weights (PSIS,
Vehtari et al. 2024) against its sample-size threshold."""

import json
import math
import warnings

import pytest
import torch

import bayeslm as bl
from bayeslm.cli import main
from bayeslm.measurement.scorecard import scorecard
from bayeslm.weights import FEWEST_JUDGED, k_threshold, pareto_k

# arviz 0.23.4's `psislw` (its Zhang & Stephens fit uses a grid of 30 + √n points, loo's and ours 80 + √n: the
# values agree to 1e-3) on log w = −ξ·log u + 0.3·sin(i), u the n quantiles (i − ½)/n: a Pareto tail of shape ξ,
# perturbed.
ARVIZ = {(0.1, 64): 0.29676901855013077, (0.5, 256): 0.5461545882951055, (0.7, 4000): 0.6814938176277298,
         (0.9, 1000): 0.8672476302977938, (1.3, 64): 0.9892581605057735}


def perturbed_pareto(xi: float, n: int) -> torch.Tensor:
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return -xi * ((i - 0.5) / n).log() + 0.3 * torch.sin(i - 1)


@pytest.mark.parametrize("xi, n", sorted(ARVIZ))
def test_pareto_k_matches_a_reference_implementation(xi, n):
    assert pareto_k(perturbed_pareto(xi, n)) == pytest.approx(ARVIZ[(xi, n)], abs=1e-3)


@pytest.mark.parametrize("xi", [0.2, 0.5, 0.8])
def test_pareto_k_recovers_the_shape_of_a_pareto_tail(xi):
    u = (torch.arange(1, 4001, dtype=torch.float64) - 0.5) / 4000
    assert pareto_k(-xi * u.log()) == pytest.approx(xi, abs=0.03)


def test_bounded_weights_are_the_best_case_and_too_few_samples_cannot_be_judged():
    assert pareto_k(torch.tensor([0.0] * 60 + [float("-inf")] * 40)) == -math.inf  # a constraint under the prior
    assert pareto_k(torch.tensor([0.0] * 13 + [float("-inf")] * 115)) == -math.inf  # ... met by fewer than the tail
    assert pareto_k(torch.tensor([0.0] * 4 + [float("-inf")] * 124)) == math.inf  # 4 are too few to say bounded
    assert pareto_k(torch.tensor([0.0] * 1 + [float("-inf")] * 31)) == math.inf  # one alone, above all
    assert pareto_k(torch.tensor([0.0] * 13 + [-1.0] * 5 + [float("-inf")] * 110)) == math.inf  # 18 < 21: too few
    # Zeros reaching into the tail: the tail of the non-zero weights is judged (zeros change no moment's finiteness).
    u = torch.rand(60, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    heavy = -0.3 * u.log()  # log-weights of a Pareto tail of shape 0.3
    assert pareto_k(torch.cat([heavy, torch.full((2000,), float("-inf"))])) == pareto_k(heavy)
    assert pareto_k(torch.randn(FEWEST_JUDGED - 1, dtype=torch.float64)) == math.inf  # 4 tail samples: too few
    assert math.isfinite(pareto_k(torch.randn(FEWEST_JUDGED, dtype=torch.float64)))
    assert k_threshold(256) == pytest.approx(1 - 1 / math.log10(256)) and k_threshold(10**6) == 0.7


def test_weights_spanning_more_than_floats_hold_are_the_heaviest_tail():
    log_w = torch.cat([torch.zeros(1), -1000.0 - torch.arange(59.0)]).double()  # e^-1000 underflows to 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no numpy warning on the way
        assert pareto_k(log_w) == math.inf


def test_weights_tied_but_for_float32_noise_are_tied():
    # Bounded weights of a discrete space (5 values, many repeats), as a float32 scorer returns them: equal
    # weights differ by ~1e-6. Unmerged, the fit sees clusters of nearly equal weights and gives k̂ ≈ 9.
    tied = torch.tensor([0.0, -0.1, -0.7, -1.2, -2.0], dtype=torch.float64).repeat_interleave(
        torch.tensor([20, 60, 60, 60, 60]))
    noisy = tied + 2e-6 * torch.randn(len(tied), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert math.isfinite(pareto_k(tied)) and pareto_k(tied) < 0.5
    assert pareto_k(noisy) == pytest.approx(pareto_k(tied), abs=1e-3)


@pytest.fixture(scope="module")
def far_model(tmp_path_factory):
    """A toy network other than the prior: far from the target, its weights have a heavy tail."""
    path = tmp_path_factory.mktemp("far")
    model = bl.load_lm({"toy": {"seed": 1, "train_steps": 200}})
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


def test_a_model_far_from_the_target_gets_its_weighted_figures_marked(far_model, capsys):
    """Without a reference every figure that weighs by q's own weights is marked by their k̂; against the target's
    reference only q's own log Ẑ still is, and KL(q‖π*) = log Z_ref − ELBO_q lands on its exact value."""
    target = "examples/toy_sentiment.yaml"
    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 200}})
    toy = (prior * bl.Exponential(bl.rewards.sentiment(), beta=0.5)).given(["", "the movie"], max_new_tokens=4)
    own = scorecard(bl.load_lm(str(far_model)), toy, 256)
    assert own.pareto_k > own.pareto_k_threshold
    for key in ("log_z", "eubo", "kl_model_target", "kl_target_model", "tv_model_target"):
        assert "Pareto k̂" in own[key].unreliable, key
    assert main(["evaluate", "--target", target, "--model", str(far_model), "-n", "256", "--exact", "--json",
                 "--quiet"]) == 0
    out = capsys.readouterr()
    card = json.loads(out.out)
    assert card["pareto_k"] > card["pareto_k_threshold"]
    assert "Pareto k̂" in card["log_z_model"]["unreliable"]
    # What the mark is for: the far model's own log Ẑ is many standard errors from log Z; KL(q‖π*) is not.
    log_z = card["log_z_model"]
    assert abs(log_z["value"] - card["exact"]["log_z"]) > 3 * log_z["stderr"]
    kl = card["kl_model_target"]
    assert "unreliable" not in kl and abs(kl["value"] - card["exact"]["kl_model_target"]) <= 3 * kl["stderr"]
    for key in ("elbo", "kl_model_prior", "entropy", "reward_mean"):  # plain means under q
        assert "unreliable" not in card[key], key
    assert "bayeslm: warning: unreliable estimates: q misses part of π*'s mass" in out.err and "Pareto k̂" in out.err


def test_the_prior_close_to_the_target_is_not_marked(capsys):
    assert main(["evaluate", "--target", "examples/toy_sentiment.yaml", "-n", "256", "--json", "--quiet"]) == 0
    out = capsys.readouterr()
    card = json.loads(out.out)
    assert card["pareto_k"] < card["pareto_k_threshold"]
    assert not any("unreliable" in figure for figure in card.values() if isinstance(figure, dict))
    assert "warning" not in out.err


def test_a_sampler_s_log_z_and_the_plan_carry_the_diagnostic(far_model):
    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 200}})
    target = (prior * bl.Exponential(bl.rewards.sentiment(), beta=0.5)).given(["", "the movie"], max_new_tokens=4)
    far = bl.load_lm(str(far_model))
    draws = bl.sample(target, "importance", n=256, proposal=far)
    assert draws.log_z.unreliable and "unreliable: Pareto k̂" in str(draws)
    assert bl.sample(target, "importance", n=256).log_z.unreliable is None
    tilted = bl.Plan(target, 256).at(0.02)  # a tilt so sharp that a few prior samples carry all the weight
    assert tilted.pareto_k > tilted.pareto_k_threshold and not tilted.trusted


def test_training_logs_the_batch_k_and_never_swaps_the_proposal_on_weights_it_cannot_trust(tmp_path, capsys):
    from bayeslm.measurement.report import write_report

    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 0}})
    target = (prior * bl.Exponential(bl.rewards.keyword(["good"]), beta=0.5)).given(["", "the movie"],
                                                                                    max_new_tokens=3)
    settings = dict(steps=4, lr=3e-3, prompts_per_step=2, grad_accum=2, quiet=True, eval_n=0)
    run = bl.train(target, bl.DPG(proposal="adaptive"), samples_per_prompt=8, out=tmp_path / "run", **settings)
    for m in run.metrics:
        assert m["pareto_k_threshold"] == k_threshold(32)  # the pooled weights of the step's 32 samples
        assert m["unreliable"] == (not m["pareto_k"] <= m["pareto_k_threshold"])
        assert m["proposal_swap"] == "unreliable" if m["unreliable"] else m["proposal_swap"] in ("swapped", "kept")
    swaps = [m["proposal_swap"] for m in run.metrics]
    assert "swapped" in swaps and "unreliable" in swaps  # both cases happen on this toy
    page = write_report(tmp_path / "run")[0].read_text()
    assert (f"At {swaps.count('unreliable')} of 4 steps" in page
            and f"not replaced at {swaps.count('unreliable')} of them" in page)

    # 16 samples a step: too few to fit a tail, so no swap can be trusted, and the run says so at the start.
    run = bl.train(target, bl.DPG(proposal="adaptive"), samples_per_prompt=4, **settings)
    assert all(m["proposal_swap"] == "unreliable" for m in run.metrics)
    assert "the proposal will stay the prior" in capsys.readouterr().err
