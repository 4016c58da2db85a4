"""Targets compose like the maths, and moment constraints are met."""

import math

import pytest
import torch
from conftest import PROMPTS

from bayeslm.measurement.exact import Exact
from bayeslm.modelling.potentials import Constraint, Exponential, ExponentialFamily, constrain
from bayeslm.modelling.potentials.base import Product
from bayeslm.modelling.rewards import Reward, RewardError, keyword, length
from bayeslm.modelling.target import Target

TEXTS = ["good movie", "bad movie", "the very good good"]


def test_prior_times_potentials_reads_like_the_maths(prior, goodness):
    target = prior * Exponential(goodness, beta=0.5) * Constraint(keyword(["movie"]))
    assert isinstance(target, Target) and isinstance(target.potential, Product)
    log_phi = target.potential(TEXTS, [""] * 3)
    assert torch.equal(log_phi, torch.tensor([2.0, -2.0, float("-inf")], dtype=torch.float64))


def test_exponential_is_reward_over_beta(goodness):
    assert torch.equal(Exponential(goodness, beta=0.25)(TEXTS, [""] * 3),
                       torch.tensor([4.0, -4.0, 8.0], dtype=torch.float64))


@pytest.mark.parametrize("beta", [0, -1.0])
def test_beta_must_be_positive(goodness, beta):
    with pytest.raises(ValueError, match="beta must be > 0"):
        Exponential(goodness, beta=beta)


def test_constraint_bounds():
    at_most_two = Constraint(length(), at_most=2)
    assert at_most_two(TEXTS, [""] * 3).tolist() == [0.0, 0.0, -math.inf]
    assert Constraint(length(), at_least=3)(TEXTS, [""] * 3).tolist() == [-math.inf, -math.inf, 0.0]


def test_exponential_family_is_linear_in_features(goodness):
    family = ExponentialFamily([goodness, length()], [0.5, -1.0])
    assert family(TEXTS, [""] * 3).tolist() == [0.5 - 2, -0.5 - 2, 1.0 - 4]


def test_constrain_meets_the_moment_in_the_exact_posterior(prior):
    family = constrain(prior, [keyword(["movie"])], [0.3], prompts=PROMPTS, max_new_tokens=4, n=3000, seed=1)
    exact = Exact((prior * family).given(PROMPTS, max_new_tokens=4)).scorecard(prior)
    achieved = exact["statistics"]["keyword:movie"]["target"]
    prior_mean = exact["statistics"]["keyword:movie"]["model"]
    assert abs(prior_mean - 0.3) > 0.05  # the constraint has work to do
    assert abs(achieved - 0.3) < 0.02  # up to the Monte Carlo error of the fit


def test_constrain_two_moments_at_once(prior):
    features = [keyword(["movie"]), keyword(["good"])]
    family = constrain(prior, features, [0.5, 0.4], prompts=PROMPTS, max_new_tokens=4, n=3000, seed=2)
    stats = Exact((prior * family).given(PROMPTS, max_new_tokens=4)).scorecard(prior)["statistics"]
    assert abs(stats["keyword:movie"]["target"] - 0.5) < 0.03
    assert abs(stats["keyword:good"]["target"] - 0.4) < 0.03


@pytest.mark.parametrize("moment", [1.0, 0.0, 1.5])
def test_unreachable_moment_is_a_clear_error(prior, moment):
    with pytest.raises(ValueError, match="cannot fit the moment"):
        constrain(prior, [keyword(["movie"])], [moment], prompts=PROMPTS, max_new_tokens=4, n=200)


def test_constrain_from_another_proposal_uses_importance_weights(prior):
    family = constrain(prior, [keyword(["movie"])], [0.3], prompts=PROMPTS, max_new_tokens=4, n=3000, seed=3,
                       proposal=prior.warped(temperature=1.5))
    achieved = Exact((prior * family).given(PROMPTS, max_new_tokens=4)).scorecard(prior)["statistics"]
    assert abs(achieved["keyword:movie"]["target"] - 0.3) < 0.03


def test_reward_that_raises_names_the_reward_and_the_text():
    def picky(texts, prompts):
        if any("bad" in t for t in texts):
            raise KeyError("no bad words")
        return [1.0] * len(texts)

    with pytest.raises(RewardError, match=r"'picky' raised KeyError.*'bad movie'"):
        Reward(picky)(TEXTS, [""] * 3)


def test_reward_returning_nan_names_the_text():
    nan_on_bad = Reward(lambda t, p: [float("nan") if "bad" in s else 0.0 for s in t], "nan_on_bad")
    with pytest.raises(RewardError, match=r"'nan_on_bad' returned nan for the text 'bad movie'"):
        nan_on_bad(TEXTS, [""] * 3)


def test_reward_returning_the_wrong_number_of_values():
    with pytest.raises(RewardError, match="returned 1 values for 3 texts"):
        Reward(lambda t, p: [1.0], "short")(TEXTS, [""] * 3)


def test_builtin_rewards_score_real_text():
    from bayeslm.modelling.rewards import offensiveness, regex, sentiment

    texts = ["What a wonderful, lovely day!", "This is awful and I hate it."]
    happy, sad = sentiment()(texts, ["", ""]).tolist()
    assert happy > 0.5 and sad < -0.5
    mild, rude = offensiveness()(["have a nice day", "you are a fucking idiot"], ["", ""]).tolist()
    assert mild < 0.2 < 0.8 < rude
    assert regex(r"\d+")(["no digits", "room 101"], ["", ""]).tolist() == [0.0, 1.0]
    assert keyword(["Movie"])(["a movie.", "movies"], ["", ""]).tolist() == [1.0, 0.0]


def test_local_sequence_classifier_reward(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from bayeslm.distributions.toy import toy_tokenizer
    from bayeslm.modelling.rewards import classifier

    tokenizer = toy_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=16,
                        pad_token_id=tokenizer.pad_token_id, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1})
    model = GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reward = classifier(str(tmp_path), label="POSITIVE")
    texts = ["good movie", "not very good the movie", "bad"]
    values = reward(texts, [""] * 3)
    with torch.no_grad():
        expected = [model(**tokenizer(t, return_tensors="pt")).logits.softmax(-1)[0, 1].item() for t in texts]
    assert torch.allclose(values, torch.tensor(expected, dtype=torch.float64), atol=1e-5)
    with pytest.raises(ValueError, match="not one of the classifier's labels"):
        classifier(str(tmp_path), label="NEUTRAL")


def test_a_reward_model_with_one_output_gives_its_score_and_may_read_the_prompt(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from bayeslm.distributions.toy import toy_tokenizer
    from bayeslm.modelling.rewards import classifier

    tokenizer = toy_tokenizer()
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=16,
                        pad_token_id=tokenizer.pad_token_id, num_labels=1)
    model = GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    texts, prompts = ["good movie", "not very good the movie", "bad"], ["the", "the", "not"]
    with torch.no_grad():
        alone = [model(**tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in texts]
        paired = [model(**tokenizer(p, t, return_tensors="pt")).logits[0, 0].item() for p, t in zip(prompts, texts)]
    values = classifier(str(tmp_path))(texts, prompts)
    assert len(set(values.tolist())) == 3  # a score, not a softmax over one output (always 1)
    assert torch.allclose(values, torch.tensor(alone, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(classifier(str(tmp_path), with_prompt=True)(texts, prompts),
                          torch.tensor(paired, dtype=torch.float64), atol=1e-5)


def test_a_reward_and_a_constraint_on_it_report_separate_statistics():
    product = Exponential(length(), beta=1.0) * Constraint(length(), at_most=1)
    stats = product.statistics(["good movie", "bad"], ["", ""])
    assert stats["length"].tolist() == [2.0, 1.0] and stats["satisfied(length<=1)"].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="same name"):
        Exponential(length(), beta=1.0) * Exponential(length(), beta=2.0)


def test_a_model_reward_that_scores_different_texts_alike_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from bayeslm.distributions.toy import toy_tokenizer
    from bayeslm.modelling.rewards import RewardError, classifier

    tokenizer = toy_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=16,
                        pad_token_id=tokenizer.pad_token_id, num_labels=1)
    model = GPT2ForSequenceClassification(config).eval()
    with torch.no_grad():  # a head that ignores its input: the score is its bias, whatever the text
        model.score.weight.zero_()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reward = classifier(str(tmp_path))
    assert reward(["good movie"], [""]).tolist() == [0.0]  # one text: nothing to compare
    with pytest.raises(RewardError, match="gave every one of 2 different texts the same score 0.0"):
        reward(["good movie", "bad"], ["", ""])
