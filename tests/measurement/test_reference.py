"""One reference per target: log Z and π*'s samples estimated once, from the prior, and every model measured against
them, checked against exact values on an enumerable toy for models near and far from π*: the prior, pure RL run to
collapse, KL-RL at a learning rate that overshoots, KL-RL converged, and a network of another seed."""

import math

import pytest
import torch
from conftest import TOY_TARGET

import bayeslm as bl
from bayeslm.distributions.loading import load_lm
from bayeslm.measurement.exact import Exact
from bayeslm.measurement.scorecard import scorecard
from bayeslm.modelling.target_file import parse_target

WITHIN = 3.0  # standard errors


@pytest.fixture(scope="module")
def target():
    return parse_target(TOY_TARGET)


@pytest.fixture(scope="module")
def models(target):
    def trained(objective, steps, lr):
        return bl.train(target, objective, steps=steps, lr=lr, samples_per_prompt=8, eval_n=0, quiet=True).model

    return {"prior": target.prior,
            "pure RL, collapsed": trained(bl.RL(), 40, 3e-2),
            "KL-RL, overshooting": trained(bl.KLRL(), 40, 5e-2),
            "KL-RL, converged": trained(bl.KLRL(), 100, 3e-3),
            "another seed": load_lm({"toy": {"seed": 3, "train_steps": 50}})}


@pytest.fixture(scope="module")
def exact(target, models):
    space = Exact(target)
    return {name: space.scorecard(model) for name, model in models.items()}


@pytest.fixture(scope="module")
def cards(target, models):
    ref = bl.reference(target, 1024, seed=1, source="prior")
    assert ref.warning is None and not ref.exact
    return {name: scorecard(model, target, 256, seed=2, reference=ref) for name, model in models.items()}


MODELS = ["prior", "pure RL, collapsed", "KL-RL, overshooting", "KL-RL, converged", "another seed"]


@pytest.mark.parametrize("name", MODELS)
def test_reverse_kl_against_the_reference_is_within_three_standard_errors_and_unmarked(cards, exact, name):
    figure = cards[name]["kl_model_target"]
    assert figure.unreliable is None
    assert abs(figure.value - exact[name]["kl_model_target"]) <= WITHIN * figure.stderr, (figure, exact[name])


@pytest.mark.parametrize("name", MODELS)
def test_forward_kl_and_log_z_against_the_reference_are_within_three_standard_errors_or_marked(cards, exact, name):
    for key in ("kl_target_model", "log_z", "eubo"):
        figure = cards[name][key]
        assert figure.unreliable or abs(figure.value - exact[name][key]) <= WITHIN * figure.stderr, (key, figure)


@pytest.mark.parametrize("name", MODELS)
def test_tv_against_the_reference_is_within_three_standard_errors_and_the_resolution_of_its_samples(cards, exact,
                                                                                                     name):
    """TV = E_q[(1 − r)₊] is a mean of values in [0, 1]: where q has collapsed, the texts that carry its last
    0.07% (q < π*) are seen by none of 256 samples, and a mean of n samples cannot resolve an event rarer than
    about 3/n (the rule of three) whatever its standard error says."""
    figure = cards[name]["tv_model_target"]
    assert abs(figure.value - exact[name]["tv_model_target"]) <= WITHIN * figure.stderr + 3 / 256, figure


def test_a_collapsed_model_is_measured_right_where_its_own_samples_would_hide_it(target, models, cards, exact):
    """Its own samples put log Ẑ_q ~9 nats short of log Z, and KL(q‖π*) from them ~10 nats short of the truth; the
    reference gets it right, and says that q misses part of π*'s mass."""
    collapsed = models["pure RL, collapsed"]
    truth = exact["pure RL, collapsed"]["kl_model_target"]
    assert truth > 5
    own = scorecard(collapsed, target, 256, seed=2)["kl_model_target"]
    assert own.value < truth - 5
    assert "misses part of π*'s mass" in cards["pure RL, collapsed"]["log_z_model"].unreliable
    assert cards["prior"]["log_z_model"].unreliable is None


def test_figures_under_the_target_are_the_same_for_every_model(cards):
    values = {card["target_reward_mean"].value for card in cards.values()}
    assert len(values) == 1 and math.isfinite(values.pop())


def test_the_exact_reference_gives_the_exact_values(target, models, exact):
    ref = bl.reference(target)  # "auto": the toy's space is small enough to enumerate
    assert ref.exact and ref.source == "exact"
    for name, model in models.items():
        card = scorecard(model, target, 64, seed=2, reference=ref)
        for key in ("log_z", "eubo", "kl_target_model", "target_reward_mean"):
            assert card[key].value == pytest.approx(exact[name][key], abs=1e-5), (name, key)
            assert card[key].stderr == 0


def test_a_reference_of_another_target_is_refused(target, models):
    ref = bl.reference(target.given(["the movie"]))
    with pytest.raises(ValueError, match="the reference is of another target"):
        scorecard(models["prior"], target, 8, reference=ref)


def test_the_api_scorecard_measures_against_a_reference_by_default(target, models, exact):
    card = bl.scorecard(models["pure RL, collapsed"], target, 64)
    assert card.reference["exact"]
    assert card["log_z"].value == pytest.approx(exact["prior"]["log_z"], abs=1e-5)


def test_the_reference_knows_where_the_target_lies(target):
    """π*'s own reward, KL(π*‖π0) and entropy from the prior's samples, against enumeration."""
    space = Exact(target)
    post = space.log_posterior.exp()

    def expect(values):
        return (post * values).nan_to_num().sum(1).mean().item()

    truth = {"log_z": space.log_z.mean().item(), "target_reward_mean": expect(space.stats[target.reward_name]),
             "kl_target_prior": expect(space.log_posterior - space.log_prior),
             "target_entropy": expect(-space.log_posterior)}
    figures = bl.reference(target, 1024, seed=1, source="prior").figures()
    exact = bl.reference(target).figures()
    for key, value in truth.items():
        assert exact[key].value == pytest.approx(value, abs=1e-5), key
        assert abs(figures[key].value - value) <= WITHIN * figures[key].stderr, (key, figures[key], value)


def test_a_cached_reference_is_reused_only_while_it_is_still_true(target, tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESLM_CACHE", str(tmp_path))
    first = bl.reference(target, 64, seed=5, source="prior")
    [path] = (tmp_path / "references").iterdir()
    assert torch.equal(bl.reference(target, 64, seed=5, source="prior").log_z, first.log_z)
    held = torch.load(path, weights_only=True)
    held["log_phi"] = held["log_phi"] + 1.0  # as if the reward function had changed since
    torch.save(held, path)
    assert torch.equal(bl.reference(target, 64, seed=5, source="prior").log_z, first.log_z)  # drawn anew
    path.write_bytes(b"not a reference")
    assert torch.equal(bl.reference(target, 64, seed=5, source="prior").log_z, first.log_z)
    assert bl.reference(target, 64, seed=6, source="prior").log_z.ne(first.log_z).any()  # another seed, another key
