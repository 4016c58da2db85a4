"""pass@k: the chance that at least one of k samples for a prompt is correct, and how many different correct
answers the samples hold.

From n ≥ k samples of a prompt of which c are correct, the unbiased estimator (Chen et al. 2021, "Evaluating
Large Language Models Trained on Code", eq. 1) is

    pass@k = 1 − C(n−c, k) / C(n, k) = 1 − Π_{i=n−c+1}^{n} (1 − k/i)

(the product form never builds a binomial coefficient), averaged over prompts. Its standard error is the
jackknife's over each prompt's samples (the estimator is a U-statistic, so leaving one sample out gives
pass@k from n − 1 samples with c or c − 1 correct), combined over prompts as independent: the prompts are taken as
given, not as a sample of a larger population. At k = n one prompt's figure is 1[c > 0], which no jackknife can
judge: its standard error is unknown (inf) and the figure says so.

What counts as correct (`Verdicts`): a verifier's non-zero value where one is given (`bayeslm evaluate --verifier`,
to judge a model against a target with no verifier in it, such as a power target), else the target's own hard
constraints: a sample is correct when it lies in π*'s support (φ > 0), so that pass@1 of the prior is exactly
Z of the verifier posterior π0·1[correct]. A target without either has no pass@k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bayeslm.modelling.potentials.base import Potential
from bayeslm.modelling.potentials.constraint import hard_constraints
from bayeslm.modelling.rewards import Reward
from bayeslm.weights import Estimate, combine


def pass_at_k_one(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one prompt with c correct of n samples."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 ≤ c ≤ n and 1 ≤ k ≤ n, got n = {n}, c = {c}, k = {k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> Estimate:
    """pass@k averaged over prompts from each prompt's correctness of its samples (`correct[c][i]`), with its
    jackknife standard error (inf where a prompt has only k samples)."""
    per_prompt, pseudo = [], []
    for row in correct:
        n, c = len(row), sum(bool(x) for x in row)
        value = pass_at_k_one(n, c, k)
        per_prompt.append(value)
        if n <= k:
            pseudo.append(torch.zeros(1, dtype=torch.float64))  # one value: combine gives it infinite variance
            continue
        # Jackknife pseudo-values n·θ − (n−1)·θ_(i): θ_(i) leaves out a correct (c − 1 of n − 1) or a wrong sample.
        left = {True: pass_at_k_one(n - 1, c - 1, k) if c else 0.0,
                False: pass_at_k_one(n - 1, c, k) if c < n else 0.0}
        pseudo.append(torch.tensor([n * value - (n - 1) * left[bool(x)] for x in row], dtype=torch.float64))
    return combine(per_prompt, pseudo)


def powers_of_two(n: int) -> list[int]:
    """The k of a pass@k curve from n samples a prompt: 1, 2, 4, … up to n, and n itself."""
    return sorted({2 ** i for i in range(int(math.log2(n)) + 1)} | {n})


def pass_at_k_curve(correct: Sequence[Sequence[bool]], ks: Sequence[int] | None = None) -> dict[int, Estimate]:
    """pass@k for each k in `ks` (default 1, 2, 4, … up to the fewest samples of any prompt, and that number)."""
    if ks is None:
        ks = powers_of_two(min(len(row) for row in correct))
    return {k: pass_at_k(correct, k) for k in ks}


def distinct_correct(answers: Sequence[Sequence[str]], correct: Sequence[Sequence[bool]],
                     normalise: Callable[[str], str] = str.strip) -> float:
    """The number of different correct answers per prompt (after `normalise`), averaged over prompts: how much
    of the space of right answers the samples cover, which pass@1 cannot see."""
    counts = [len({normalise(a) for a, ok in zip(row, oks) if ok}) for row, oks in zip(answers, correct)]
    return sum(counts) / len(counts)


@dataclass(frozen=True)
class Verdicts:
    """Which texts are correct, by what judge, and the answer each gives."""

    judge: str
    correct: torch.Tensor  # [N] bool
    answers: list[str]


def verdicts(texts: Sequence[str], prompts: Sequence[str], log_phi: torch.Tensor, potential: Potential,
             verifier: Reward | None = None) -> Verdicts | None:
    """Judges each text (of `prompts`, with its log φ under the target): by `verifier` where given, else by the
    target's hard constraints (φ > 0); None where the target has none and no verifier is given."""
    if verifier is not None:
        correct = verifier(texts, prompts) != 0
        return Verdicts(verifier.name, correct, [verifier.answer(t, c) for t, c in zip(texts, prompts)])
    judges = hard_constraints(potential)
    if not judges:
        return None
    # One constraint reads the answer its own way (a task's verifier reads the number); several, the whole text.
    answer = judges[0].answer if len(judges) == 1 else (lambda text, prompt: text.strip())
    return Verdicts(" and ".join(map(repr, judges)), log_phi > -math.inf,
                    [answer(t, c) for t, c in zip(texts, prompts)])


def exact_pass_at_k(p_correct: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    """pass@k = mean over prompts of 1 − (1 − p_c)^k, from each prompt's exact chance p_c of a correct sample."""
    return {k: (1 - (1 - p_correct.double()) ** k).mean().item() for k in ks}
