"""Every sampler checked against exact values on an enumerable toy: goodness-of-fit tests at significance 1e-3,
estimates within 3 standard errors, and the command line as a user runs it."""

import itertools
import json
import math

import pytest
import torch
import yaml
from conftest import PROMPTS, chi_square_p, rows_of, run

import bayeslm as bl
from bayeslm import weights
from bayeslm.distributions.toy import ToyConfig, toy_lm
from bayeslm.measurement.exact import Exact
from bayeslm.modelling.potentials import Constraint, Exponential, Forbid, StartsWith
from bayeslm.modelling.rewards import keyword
from bayeslm.samplers import NoBound, best_of_n, imh, importance, propose, qrs, rejection, sir, smc, tradeoff
from bayeslm.samplers.best_of_n import kl_to_proposal
from bayeslm.samplers.pool import generators
from bayeslm.samplers.qrs import choose_beta

SIGNIFICANCE = 1e-3


@pytest.fixture(scope="module")
def targets(prior, goodness):
    made = {
        "reward": prior * Exponential(goodness, beta=1.0),
        "constraint": prior * Constraint(keyword(["good"])),
        "keyword": prior * Exponential(keyword(["good"]), beta=0.5),
    }
    return {name: t.given(PROMPTS, max_new_tokens=3) for name, t in made.items()}


@pytest.fixture(scope="module")
def exacts(targets):
    return {name: Exact(t) for name, t in targets.items()}


# ----- rejection sampling ----------------------------------------------------------------------------------------

def test_rejection_samples_follow_the_target_of_a_constraint(targets, exacts):
    draws = rejection(targets["constraint"], n=1500, seed=1)  # M = 1: the prior as proposal
    exact = exacts["constraint"]
    assert draws.counts() == [1500, 1500] and draws.figures["log_bound"] == 0
    for c in range(2):
        assert chi_square_p(rows_of(draws, c), exact.log_posterior[c].exp(), exact.sequences) > SIGNIFICANCE
    assert abs(draws.log_z.value - exact.log_z.mean().item()) <= 3 * draws.log_z.stderr


def test_rejection_with_a_bounded_reward_accepts_at_rate_z_over_m(targets, exacts):
    target = targets["keyword"].given(["the movie"])
    draws = rejection(target, n=2000, reward_max=1.0, seed=2)  # M = exp(1/0.5)
    exact = Exact(target)
    assert draws.figures["log_bound"] == 2.0
    assert chi_square_p(rows_of(draws, 0), exact.log_posterior[0].exp(), exact.sequences) > SIGNIFICANCE
    rate = math.exp(exact.log_z[0].item() - 2.0)
    proposed = int(draws.proposals.sum())
    assert abs(draws.acceptance_rate - rate) <= 3 * math.sqrt(rate * (1 - rate) / proposed)
    assert torch.all(draws.acceptance <= 1) and torch.all(draws.acceptance > 0)


def test_rejection_from_another_proposal_with_its_exact_bound(prior, targets):
    target = targets["reward"].given(["the movie"])
    proposal = prior.warped(temperature=1.4)
    exact = Exact(target)
    log_bound = (exact.log_target - exact.log_probs(proposal)).max().item()
    draws = rejection(target, proposal, n=1000, log_bound=log_bound, seed=3)
    assert chi_square_p(rows_of(draws, 0), exact.log_posterior[0].exp(), exact.sequences) > SIGNIFICANCE


def test_rejection_refuses_without_a_valid_bound(prior, targets):
    with pytest.raises(NoBound, match="needs a bound on the reward.*reward_max"):
        rejection(targets["reward"], n=10)
    with pytest.raises(NoBound, match="not the prior"):
        rejection(targets["constraint"], prior.warped(temperature=1.4), n=10)
    with pytest.raises(ValueError, match="is not a bound"):  # goodness reaches 3 > 1
        rejection(targets["reward"], n=200, reward_max=1.0)


def test_rejection_keeps_what_it_accepted_when_the_budget_runs_out(targets):
    draws = rejection(targets["constraint"], n=100, budget=30, seed=4)
    assert all(0 < k < 100 for k in draws.counts()) and draws.proposals.tolist() == [30, 30]
    assert len(draws.notes) == 2 and "budget of 30 proposals ran out" in draws.notes[0]


# ----- importance sampling and SIR -------------------------------------------------------------------------------

def test_importance_weights_are_p_over_q_and_give_log_z(prior, targets, exacts):
    draws = importance(targets["reward"], prior.warped(temperature=1.4), n=1000, seed=5)
    s = draws.samples
    assert torch.allclose(draws.log_weight, s.log_target - s.log_proposal)
    assert abs(draws.log_z.value - exacts["reward"].log_z.mean().item()) <= 3 * draws.log_z.stderr
    assert 0 < draws.ess < 2000
    assert torch.allclose(draws.weights().reshape(2, -1).sum(1), torch.ones(2, dtype=torch.float64))


def test_sir_converges_to_the_target_as_the_pool_grows(targets):
    target = targets["reward"].given(["the movie"])
    exact = Exact(target)
    posterior = exact.log_posterior[0].exp()
    small = sir(target, n=1000, pool_size=50, seed=6)
    large = sir(target, n=1000, pool_size=20000, seed=6)
    assert chi_square_p(small.samples.continuations, posterior, exact.sequences) < SIGNIFICANCE
    assert chi_square_p(large.samples.continuations, posterior, exact.sequences) > SIGNIFICANCE
    assert small.figures["distinct_samples"] <= 50 < large.figures["distinct_samples"]


# ----- quasi-rejection sampling ----------------------------------------------------------------------------------

def qrs_exact(exact, beta):
    """Exact acceptance, TV and both KLs of QRS with the prior as proposal, means over prompts."""
    log_q, log_w = exact.log_prior, exact.log_target - exact.log_prior
    log_g = (log_w - math.log(beta)).clamp(max=0)
    log_a = torch.logsumexp(log_q + log_g, 1)
    log_p = log_q + log_g - log_a[:, None]
    p, post = log_p.exp(), exact.log_posterior.exp()
    ratio = torch.where(post > 0, exact.log_posterior - log_p, torch.zeros(()).double())
    return {"acceptance_rate": log_a.exp().mean().item(), "tv_qrs_target": 0.5 * (p - post).abs().sum(1).mean().item(),
            "kl_target_qrs": (post * ratio).sum(1).mean().item(), "kl_qrs_target": -(p * ratio).sum(1).mean().item(),
            "law": p}


def test_qrs_estimated_tradeoff_matches_exact_values(targets, exacts):
    target, exact = targets["keyword"], exacts["keyword"]
    rows = tradeoff(target, betas=[0.5, 1.0, 2.0, 4.0, 8.0], n=3000, seed=7)
    for row in rows:
        truth = qrs_exact(exact, row.beta)
        for key in ("acceptance_rate", "tv_qrs_target", "kl_target_qrs", "kl_qrs_target"):
            estimate = getattr(row, key)
            # The slack covers sequences too rare (probability < 1e-6) to appear in the pool at all.
            assert abs(estimate.value - truth[key]) <= 3 * estimate.stderr + 1e-6, (row.beta, key, estimate, truth[key])
    assert rows[-1].tv_qrs_target.value == pytest.approx(0, abs=1e-12)  # β = 8 ≥ max w = e²: exact rejection
    assert [r.tv_qrs_target.value for r in rows] == sorted((r.tv_qrs_target.value for r in rows), reverse=True)


@pytest.mark.parametrize("goal", [{"acceptance": 0.5}, {"tv": 0.05}])
def test_qrs_chooses_beta_for_a_stated_acceptance_or_distance(targets, exacts, goal):
    chosen = choose_beta(targets["reward"], **goal, pool_n=2000, seed=3)
    truth = qrs_exact(exacts["reward"], chosen.beta)
    if "acceptance" in goal:  # the closest to π* that still accepts half: a step further accepts less than half
        assert truth["acceptance_rate"] >= 0.5 - 3 * chosen.acceptance_rate.stderr
        assert (qrs_exact(exacts["reward"], chosen.beta * 1.1)["acceptance_rate"]
                < 0.5 + 3 * chosen.acceptance_rate.stderr)
    else:
        assert truth["tv_qrs_target"] <= 0.05 + 3 * chosen.tv_qrs_target.stderr
    draws = bl.sample(targets["reward"], "qrs", n=20, **goal, choice_pool=2000, seed=3)
    assert draws.figures["qrs_beta"] == chosen.beta and "chosen for" in draws.notes[0]
    with pytest.raises(ValueError, match="no β reaches an acceptance rate of 0.999"):  # only satisfying texts pass
        choose_beta(targets["constraint"], acceptance=0.999, pool_n=200)


def test_qrs_samples_follow_their_exact_law(targets, exacts):
    draws = qrs(targets["reward"], n=1500, qrs_beta=2.0, seed=8)
    law = qrs_exact(exacts["reward"], 2.0)["law"]
    for c in range(2):
        assert chi_square_p(rows_of(draws, c), law[c], exacts["reward"].sequences) > SIGNIFICANCE
    assert draws.figures["qrs_beta"] == 2.0 and 0 < draws.acceptance_rate < 1


# ----- independent Metropolis–Hastings ---------------------------------------------------------------------------

def test_imh_converges_to_the_target_as_chains_run_longer(targets):
    target = targets["reward"].given(["the movie"])
    exact = Exact(target)
    posterior = exact.log_posterior[0].exp()
    # One state per chain from 2000 independent chains: independent draws from the chain's law at that step.
    early = imh(target, n=2000, chains=2000, burn_in=0, seed=9)
    late = imh(target, n=2000, chains=2000, burn_in=11, seed=9)
    assert chi_square_p(early.samples.continuations, posterior, exact.sequences) < SIGNIFICANCE
    assert chi_square_p(late.samples.continuations, posterior, exact.sequences) > SIGNIFICANCE
    # At stationarity a move is accepted with probability E_{x~π*, y~q} min(1, w(y)/w(x)).
    log_w = exact.log_target[0] - exact.log_prior[0]
    accept = torch.exp(exact.log_posterior[0][:, None] + exact.log_prior[0][None, :]
                       + (log_w[None, :] - log_w[:, None]).clamp(max=0)).sum().item()
    assert abs(late.acceptance_rate - accept) <= 3 * math.sqrt(accept * (1 - accept) / 2000)


def test_imh_reports_autocorrelation_and_the_effective_sample_size(targets):
    draws = imh(targets["keyword"], n=800, chains=8, burn_in=20, seed=10)
    rho = draws.figures["autocorrelation"]
    assert len(rho) == 10 and 0 < rho[0] < 1  # rejected moves repeat the state
    # ESS = N/τ with the integrated autocorrelation time τ = 1 + 2 Σ ρ_k over the initial positive lags.
    tau = 1 + 2 * sum(itertools.takewhile(lambda r: r > 0, rho))
    assert draws.ess == pytest.approx(len(draws) / tau) and draws.ess < len(draws)
    assert draws.counts() == [800, 800] and not draws.notes


# ----- sequential Monte Carlo ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_model():
    """Another network with the prior's vocabulary, trained less: a proposal close enough to the target that
    Ẑ is not heavy-tailed (a far proposal makes Ẑ so skewed that a mean of 300 runs is not yet normal)."""
    return toy_lm(ToyConfig(seed=0, train_steps=100))


def smc_targets(prior, goodness):
    return {
        "forbid": prior * Forbid(["good"]),
        "starts_with": prior * StartsWith("very"),
        "whole_sequence": prior * Constraint(keyword(["movie"])),
        "reward_and_forbid": prior * Exponential(goodness, beta=1.0) * Forbid(["bad"]),
    }


@pytest.mark.parametrize("name", ["forbid", "starts_with", "whole_sequence", "reward_and_forbid"])
def test_smc_estimate_of_z_is_unbiased(prior, goodness, other_model, name):
    runs = 300
    target = smc_targets(prior, goodness)[name].given(["the movie"] * runs, max_new_tokens=4)
    proposal = other_model if name == "reward_and_forbid" else prior
    draws = smc(target, proposal, n=8, ess_threshold=0.9, seed=11)
    z_hat = draws.log_z_per_prompt.exp()  # one independent run per (repeated) prompt
    z = Exact(target.given(["the movie"])).log_z.exp().item()
    assert abs(z_hat.mean().item() - z) <= 3 * z_hat.std().item() / math.sqrt(runs), (z_hat.mean(), z)
    assert draws.figures["resampling_steps"] > 0


def test_smc_particles_carry_their_exact_log_probabilities(prior, goodness, other_model):
    target = smc_targets(prior, goodness)["reward_and_forbid"].given(PROMPTS, max_new_tokens=4)
    draws = smc(target, other_model, n=64, ess_threshold=1.0, seed=12)  # resample at every step
    s = draws.samples
    assert draws.figures["resampling_steps"] >= 2
    # Reordered KV caches must leave every particle scored as if it had been drawn alone.
    assert torch.allclose(s.log_prior, prior.log_prob(s.sample_prompts, s.continuations).double(), atol=1e-4)
    assert torch.allclose(s.log_proposal, other_model.log_prob(s.sample_prompts, s.continuations).double(),
                          atol=1e-4)


def test_smc_without_resampling_is_importance_sampling(prior, goodness):
    target = smc_targets(prior, goodness)["forbid"].given(PROMPTS, max_new_tokens=4)
    draws = smc(target, prior.warped(temperature=1.3), n=200, ess_threshold=0.0, seed=13)
    s = draws.samples
    assert draws.figures["resampling_steps"] == 0
    assert torch.allclose(draws.log_weight, s.log_target - s.log_proposal, atol=1e-6)
    log_z = torch.logsumexp(draws.log_weight.reshape(2, -1), 1) - math.log(200)
    assert torch.allclose(draws.log_z_per_prompt, log_z)
    # ... and Lee & Whiteley's variance, every particle its own Eve, is importance sampling's (delta method)
    for c, group in enumerate(draws.log_weight.reshape(2, -1)):
        assert draws.log_z_stderr_per_prompt[c].item() == pytest.approx(weights.log_z([group])[0].stderr, rel=1e-9)


@pytest.mark.parametrize("name, proposal", [("starts_with", "prior"), ("reward_and_forbid", "other")])
def test_one_smc_run_gives_log_z_a_standard_error_that_covers(prior, goodness, other_model, name, proposal):
    runs = 200  # independent runs: one per (repeated) prompt
    target = smc_targets(prior, goodness)[name].given(["the movie"] * runs, max_new_tokens=4)
    draws = smc(target, prior if proposal == "prior" else other_model, n=64, seed=21)
    log_z = Exact(target.given(["the movie"])).log_z.item()
    error, stderr = draws.log_z_per_prompt - log_z, draws.log_z_stderr_per_prompt
    assert draws.figures["resampling_steps"] > 0 and torch.isfinite(stderr).all() and not draws.log_z.unreliable
    assert (error.abs() <= 2 * stderr).double().mean() >= 0.9  # nominal 0.95; we see 0.965 and 0.94
    assert stderr.square().mean().sqrt().item() == pytest.approx(error.std().item(), rel=0.2)
    assert "log Z       " in str(draws) and " ± " in str(draws).split("log Z")[1].splitlines()[0]


def test_an_smc_run_whose_variance_cannot_be_estimated_says_so(prior, goodness):
    # Resampling at every step with 8 particles: the genealogy collapses or the estimate's noise swamps it.
    target = smc_targets(prior, goodness)["forbid"].given(["the movie"] * 50, max_new_tokens=4)
    draws = smc(target, prior, n=8, ess_threshold=1.0, seed=22)
    flagged = ~torch.isfinite(draws.log_z_stderr_per_prompt)
    assert flagged.any() and math.isnan(draws.log_z.stderr)
    assert "cannot tell how far log Ẑ may be off" in draws.log_z.unreliable


# ----- best-of-n -------------------------------------------------------------------------------------------------

def best_of_n_law(log_q, score, candidates):
    """Exact law of the best of `candidates` draws from q by score, ties broken uniformly: the top score is v
    with probability F(v)^k − F(v⁻)^k, then the winner is drawn from q restricted to score v."""
    values = score.unique()
    law = torch.zeros_like(log_q)
    q = log_q.exp()
    for v in values:
        tied = score == v
        below, at = q[score < v].sum(), q[tied].sum()
        law[tied] = q[tied] / at * ((below + at) ** candidates - below ** candidates)
    return law


def test_best_of_n_follows_its_exact_law_within_the_kl_bound(prior, targets, exacts):
    draws = best_of_n(targets["reward"], n=1500, candidates=4, seed=14)
    exact = exacts["reward"]
    assert draws.figures["kl_proposal_bound"] == pytest.approx(math.log(4) - 3 / 4)
    for c in range(2):
        law = best_of_n_law(exact.log_prior[c], exact.stats["goodness"][c], 4)
        assert chi_square_p(rows_of(draws, c), law, exact.sequences) > SIGNIFICANCE
        kl = (law * (law.log() - exact.log_prior[c])).nan_to_num().sum().item()
        assert 0 < kl <= kl_to_proposal(4)


# ----- the pool and its randomness -------------------------------------------------------------------------------

def test_the_same_seed_gives_the_same_samples(targets):
    a, b = (qrs(targets["reward"], n=50, qrs_beta=2.0, seed=15) for _ in range(2))
    assert a.samples.continuations == b.samples.continuations
    draw, _ = generators(targets["reward"].prior, 15)
    pool = propose(targets["reward"], targets["reward"].prior, 5, generator=draw)
    assert pool.prompt_index.tolist() == [0] * 5 + [1] * 5


# ----- command line ----------------------------------------------------------------------------------------------

TOY = {"toy": {"seed": 0, "train_steps": 50}}


@pytest.fixture
def target_file(tmp_path):
    path = tmp_path / "target.yaml"
    path.write_text(yaml.safe_dump({"prior": TOY, "prompts": ["", "the movie"], "max_new_tokens": 3, "potentials": [
        {"exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5}}, {"forbid": {"strings": ["bad"]}}]}))
    return str(path)


@pytest.mark.parametrize("method, extra", [("ancestral", []), ("importance", []), ("sir", []),
                                           ("rejection", ["--reward-max", "1"]), ("qrs", ["--qrs-beta", "2"]),
                                           ("imh", []), ("smc", []), ("best_of_n", [])])
def test_sample_writes_one_json_object_per_sample(tmp_path, capsys, target_file, method, extra):
    out = tmp_path / "samples.jsonl"
    code, stdout, _ = run(capsys, "sample", "--target", target_file, "--method", method, "-n", "6", "--out",
                          str(out), "--json", *extra)
    assert code == 0
    summary = json.loads(stdout)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["method"] == method and summary["samples"] == len(records) == 12
    assert "log_z" in summary
    for record in records:
        assert set(record) >= {"prompt", "text", "tokens", "log_prior", "log_target", "log_proposal", "rewards",
                               "weight"}
        assert set(record["rewards"]) == {"keyword:good", "satisfied(forbid:bad)"}
        if method in ("rejection", "qrs"):
            assert 0 < record["acceptance"] <= 1
        if method not in ("ancestral", "importance", "smc", "best_of_n"):
            assert record["log_target"] is not None  # samples of the target satisfy its constraint


def test_sample_without_out_streams_samples_and_summarises_on_stderr(capsys, target_file):
    code, stdout, stderr = run(capsys, "sample", "--target", target_file, "--method", "qrs", "--qrs-beta", "2",
                               "-n", "5", "--budget", "3")
    assert code == 0
    assert len(stdout.splitlines()) <= 6 and all(json.loads(line) for line in stdout.splitlines())
    assert "acceptance" in stderr and "budget of 3 proposals ran out" in stderr


def test_sample_usage_errors_exit_2(capsys, target_file):
    code, _, err = run(capsys, "sample", "--target", target_file, "--method", "rejection", "-n", "5")
    assert code == 2 and "bayeslm: error: rejection sampling needs a bound" in err and "--reward-max" in err
    code, _, err = run(capsys, "sample", "--target", target_file, "--method", "qrs", "-n", "5")
    assert code == 2 and "--qrs-beta" in err and "--acceptance" in err
    code, _, err = run(capsys, "sample", "--target", target_file, "--method", "qrs", "--qrs-beta", "2", "--tv", "0.1")
    assert code == 2 and "exactly one of" in err
    code, _, err = run(capsys, "sample", "--target", target_file, "--method", "ancestral", "--out", "/no/such/dir/x")
    assert code == 2 and "does not exist" in err


def test_sample_reports_the_qrs_tradeoff(capsys, target_file):
    code, stdout, _ = run(capsys, "sample", "--target", target_file, "--method", "qrs", "--tradeoff", "1,3,10",
                          "-n", "200", "--json")
    rows = json.loads(stdout)["tradeoff"]
    assert code == 0 and [r["beta"] for r in rows] == [1, 3, 10]
    assert rows[0]["acceptance_rate"]["value"] >= rows[-1]["acceptance_rate"]["value"]


# ----- best-of-n as a target --------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 4])
def test_best_of_n_draws_the_best_of_n_posterior(prior, n):
    """π_BoN ∝ π0·φ_n is normalised (Z = 1), within the KL bound of Beirami et al., and what best-of-n draws."""
    from bayeslm.modelling.potentials import best_of

    potential = best_of(prior, keyword(["good"]), n, prompts=PROMPTS, max_new_tokens=3)
    target = (prior * potential).given(PROMPTS, max_new_tokens=3)
    exact = Exact(target)
    assert torch.allclose(exact.log_z, torch.zeros(2, dtype=torch.float64), atol=1e-6)
    posterior = exact.log_posterior.exp()
    kl = (posterior * (exact.log_posterior - exact.log_prior)).sum(1)
    assert (kl <= math.log(n) - (n - 1) / n + 1e-6).all() and (n == 1 or (kl > 0.1).all())  # log Z is 0 to 1e-6
    reported = potential.kl_to_prior()  # from the reward table alone, as `evaluate` reports it with the bound's gap
    assert list(reported["per_prompt"].values()) == pytest.approx(kl.tolist(), abs=1e-6)
    assert reported["gap"] == pytest.approx(math.log(n) - (n - 1) / n - kl.mean().item(), abs=1e-6)
    draws = best_of_n(target, n=3000, candidates=n, seed=31)
    for c in range(2):
        assert chi_square_p(rows_of(draws, c), posterior[c], exact.sequences) > SIGNIFICANCE


def test_best_of_n_from_sampled_rewards_says_so_and_approaches_the_exact_target(prior, tmp_path):
    from bayeslm.modelling.potentials import best_of
    from bayeslm.modelling.target_file import parse_target

    sampled = best_of(prior, keyword(["good"]), 4, prompts=PROMPTS, max_new_tokens=3, m=20000)
    assert "CDF from 20000 prior samples per prompt" in repr(sampled)
    exact = Exact((prior * best_of(prior, keyword(["good"]), 4, prompts=PROMPTS, max_new_tokens=3)).given(
        PROMPTS, max_new_tokens=3))
    approximate = Exact((prior * sampled).given(PROMPTS, max_new_tokens=3))
    tv = 0.5 * (exact.log_posterior.exp() - approximate.log_posterior.exp()).abs().sum(1)
    assert (tv < 0.02).all()
    target = parse_target({"prior": {"toy": {"seed": 0, "train_steps": 200}}, "prompts": PROMPTS,
                           "max_new_tokens": 3, "potentials": [{"best_of": {"reward": {"keyword": ["good"]}, "n": 4,
                                                                            "m": 500}}]})
    assert "BestOf(keyword:good, n=4, CDF from 500 prior samples per prompt)" in repr(target)
