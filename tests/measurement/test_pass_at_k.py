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
