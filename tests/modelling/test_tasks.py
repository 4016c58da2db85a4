"""The shipped verifiable task: seeded, disjoint splits, several right answers, and a verifier that reads the
question back from the prompt."""

import pytest

from bayeslm.config import ConfigError
from bayeslm.modelling import tasks
from bayeslm.modelling.prompts import read_prompts
from bayeslm.modelling.rewards import multiples


def test_prompts_are_seeded_distinct_and_the_splits_never_share_one():
    train = tasks.multiples(40, difficulty=2, split="train", seed=3)
    assert train == tasks.multiples(40, difficulty=2, split="train", seed=3) and len(set(train)) == 40
    assert not set(train) & set(tasks.multiples(40, difficulty=2, split="held_out", seed=3))
    assert train != tasks.multiples(40, difficulty=2, split="train", seed=4)


@pytest.mark.parametrize("difficulty, answers", [(1, 11), (2, 4), (3, 2)])
def test_every_prompt_has_its_right_answers_and_the_verifier_knows_them(difficulty, answers):
    for prompt in tasks.multiples(20, difficulty=difficulty):
        right = [x for x in range(1000) if tasks.correct(str(x), prompt)]
        assert len(right) == answers, (prompt, right)
        assert tasks.correct(f"The answer is {right[0]}.", prompt) and not tasks.correct("I don't know.", prompt)
        assert not tasks.correct(str(right[-1] + 1), prompt)  # B, or past it


def test_restating_the_question_is_no_answer_and_the_first_new_number_is():
    prompt = tasks.multiples(1, difficulty=2)[0]
    a, b, k = (int(x) for x in tasks._ASKED.search(prompt).groups())
    right = next(x for x in range(a, b) if x % k == 0)
    assert not tasks.correct(f"To find a whole number between {a} and {b} that is a multiple of {k}, we", prompt)
    assert tasks.correct(f"Between {a} and {b}, a multiple of {k} is {right}.", prompt)
    assert multiples().answer(f"Between {a} and {b}: {right}", prompt) == str(right)


def test_the_reward_is_the_verifier_and_the_target_file_reads_the_task():
    prompt = tasks.multiples(1, difficulty=2)[0]
    a = int(prompt.split("between ")[1].split(" ")[0])
    k = int(prompt.split("multiple of ")[1].split(".")[0])
    first = next(x for x in range(a, a + 5 * k) if x % k == 0)
    assert multiples()([str(first), "no", f"{first + k},"], [prompt] * 3).tolist() == [1.0, 0.0, 1.0]
    prompts, _ = read_prompts({"prompts_task": {"multiples": {"n": 5, "split": "held_out"}}}, base=None)
    assert prompts == tasks.multiples(5, split="held_out")
    with pytest.raises(ConfigError, match="difficulty must be one of"):
        read_prompts({"prompts_task": {"multiples": {"n": 5, "difficulty": 9}}}, base=None)
    with pytest.raises(ConfigError, match="unknown task 'sums'"):
        read_prompts({"prompts_task": {"sums": {"n": 5}}}, base=None)
