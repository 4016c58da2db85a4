"""pass@k against exact values: the estimator against the binomial form, its unbiasedness exactly, its jackknife
standard error against the closed form at k = 1 and by coverage."""

import math
import random

import pytest

from bayeslm.measurement.pass_at_k import distinct_correct, pass_at_k, pass_at_k_curve, pass_at_k_one


@pytest.mark.parametrize("n, c, k", [(10, 0, 1), (10, 3, 1), (10, 3, 4), (10, 7, 4), (10, 10, 10), (50, 2, 25)])
def test_the_product_form_is_the_binomial_form(n, c, k):
    assert pass_at_k_one(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


@pytest.mark.parametrize("p, n, k", [(0.3, 10, 1), (0.3, 10, 4), (0.05, 16, 8), (0.9, 8, 8)])
def test_the_estimator_is_unbiased_exactly(p, n, k):
    expected = sum(math.comb(n, c) * p ** c * (1 - p) ** (n - c) * pass_at_k_one(n, c, k) for c in range(n + 1))
    assert expected == pytest.approx(1 - (1 - p) ** k, abs=1e-12)


def test_at_k_1_the_jackknife_is_the_standard_error_of_a_mean():
    rows = [[True] * 3 + [False] * 7, [True] * 6 + [False] * 2]
    estimate = pass_at_k(rows, 1)
    variances = [c * (n - c) / (n * n * (n - 1)) for n, c in ((10, 3), (8, 6))]
    assert estimate.value == pytest.approx((0.3 + 0.75) / 2)
    assert estimate.stderr == pytest.approx(math.sqrt(sum(variances)) / 2)


def test_the_standard_error_covers_the_truth_at_its_rate():
    rng = random.Random(0)
    p, n, k, prompts, reps = 0.2, 32, 8, 4, 400
    truth, covered = 1 - (1 - p) ** k, 0
    for _ in range(reps):
        rows = [[rng.random() < p for _ in range(n)] for _ in range(prompts)]
        estimate = pass_at_k(rows, k)
        covered += abs(estimate.value - truth) <= 2 * estimate.stderr
    assert 0.90 <= covered / reps <= 0.99, covered / reps


def test_a_curve_rises_and_k_equal_to_n_has_no_standard_error():
    rows = [[i % 5 == 0 for i in range(16)], [False] * 15 + [True]]
    curve = pass_at_k_curve(rows)
    assert list(curve) == [1, 2, 4, 8, 16]
    values = [curve[k].value for k in curve]
    assert values == sorted(values) and values[-1] == 1.0 and math.isinf(curve[16].stderr)
    with pytest.raises(ValueError, match="1 ≤ k ≤ n"):
        pass_at_k(rows, 17)


def test_distinct_correct_answers_count_what_pass_at_1_cannot_see():
    answers = [["12", " 12", "7", "x"], ["3", "4", "5", "5"]]
    correct = [[True, True, True, False], [True, True, False, True]]
    assert distinct_correct(answers, correct) == (2 + 3) / 2


def test_the_scorecard_s_pass_at_k_matches_the_exact_value_and_pass_at_1_of_the_prior_is_z(prior):
    """Judged by the target's hard constraint, the prior's exact pass@1 is Z of the verifier posterior; the
    scorecard's pass@k curve matches the exact one within its standard errors."""
    import bayeslm as bl
    from bayeslm.measurement.exact import Exact

    target = bl.Target(prior, bl.Constraint(bl.rewards.keyword(["good"])), prompts=["", "the movie"],
                       max_new_tokens=4)
    exact = Exact(target)
    card = bl.scorecard(prior, target, 400, seed=3)
    assert card.verifier == "Constraint(satisfied(keyword:good))" and list(card.pass_at_k) == [1, 2, 4, 8, 16, 32, 64,
                                                                                          128, 256, 400]
    truth = exact.scorecard(prior, ks=list(card.pass_at_k))["pass_at_k"]
    assert truth[1] == pytest.approx(exact.log_z.exp().mean().item(), abs=1e-9)
    assert 0.05 < truth[1] < 0.9 and truth[8] > truth[1]  # a figure that says something at this size
    for k in (1, 2, 4, 8):
        assert abs(card.pass_at_k[k].value - truth[k]) <= 3 * card.pass_at_k[k].stderr, k
    assert card.to_json()["pass_at_k"]["1"]["value"] == card.pass_at_k[1].value
    assert 1 <= card.distinct_correct <= 400


def test_a_verifier_judges_a_target_that_has_no_constraint_and_distinct_answers_use_its_reading(prior):
    import bayeslm as bl
    from bayeslm.measurement.exact import Exact

    verifier = bl.rewards.Reward(lambda texts, prompts: [float("good" in t) for t in texts], "has_good",
                                 answer=lambda text, prompt: "one answer")
    target = bl.Target(prior, bl.power(prior, 2.0), prompts=["the movie"], max_new_tokens=4)
    assert bl.scorecard(prior, target, 20, seed=0).verifier is None  # nothing to judge by
    card = bl.scorecard(prior, target, 300, seed=1, verifier=verifier)
    truth = Exact(target).scorecard(prior, verifier=verifier, ks=[1, 4])["pass_at_k"]
    assert card.verifier == "has_good" and card.distinct_correct == 1.0
    for k in (1, 4):
        assert abs(card.pass_at_k[k].value - truth[k]) <= 3 * card.pass_at_k[k].stderr, k


@pytest.mark.parametrize("row", [[True] * 4, [False] * 4])
def test_a_prompt_whose_samples_all_agree_has_its_figure_and_no_spread(row):
    estimate = pass_at_k([row, [True, False, False, True]], 1)
    assert estimate.value == pytest.approx((float(row[0]) + 0.5) / 2) and math.isfinite(estimate.stderr)
