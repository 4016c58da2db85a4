"""What every registered potential kind must satisfy, checked on each (a new kind adds its example below)."""

import pytest
import torch
from conftest import PROMPTS

from bayeslm.distributions.toy import ToyConfig, toy_lm
from bayeslm.measurement.exact import continuations
from bayeslm.modelling.potentials import POTENTIALS, PrefixPotential, prefix_log_phi
from bayeslm.modelling.target import Potential, Target, statistics_of

# The languages are judged on bytes: their examples run on toys whose words are byte-level tokens (" good"), one
# of them with words that spell JSON.
BYTE_LEVEL = ToyConfig(seed=0, train_steps=50, byte_level=True)
JSON_WORDS = ToyConfig(seed=0, train_steps=50, byte_level=True, words=("the", "movie", '{"a":', "1", "2", "}"))
PRIORS = {"regex": BYTE_LEVEL, "grammar": BYTE_LEVEL, "json_schema": JSON_WORDS}

# One target-file entry per kind, on the toy's words (good, bad, movie, the, very, not).
EXAMPLES = {
    "exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5},
    "constraint": {"predicate": "length", "at_least": 1, "at_most": 2},
    "exponential_family": {"features": ["length", {"keyword": ["movie"]}], "coefficients": [-0.3, 1.0]},
    "moments": {"features": [{"keyword": ["good"]}], "moments": [0.5], "n": 256},
    "forbid": {"strings": ["bad"]},
    "starts_with": {"text": "the"},
    "best_of": {"reward": {"keyword": ["good"]}, "n": 4},
    "regex": {"pattern": " the( good| bad)*| not( very)? good"},
    "grammar": {"lark": 'start: " the" inner " movie" | " good"\ninner: " the" inner " movie" | " good"'},
    "json_schema": {"schema": {"type": "integer", "minimum": 2}},  # objects need 4 tokens: in test_languages.py
    "power": {"alpha": 2.0},
    "teacher": {"model": {"toy": {"seed": 1}}, "weight": 0.5},
}


def test_every_registered_kind_has_an_example():
    assert sorted(EXAMPLES) == POTENTIALS.names()


@pytest.fixture(params=sorted(EXAMPLES))
def target(request, prior):
    """The example as a target file would build it, on the session's toy prior (or a byte-level one)."""
    if request.param in PRIORS:
        prior = toy_lm(PRIORS[request.param])
    built = POTENTIALS.build({request.param: EXAMPLES[request.param]}, "potentials[0]")
    potential = built.build(prior, PROMPTS, 3) if hasattr(built, "build") else built
    return Target(prior, potential, PROMPTS, 3)


@pytest.fixture
def sequences(target):
    """Every continuation of at most 3 tokens, with its text."""
    prior = target.prior
    tokens = continuations(prior.model.config.vocab_size, prior.eos_ids.tolist(), 3)
    return tokens, prior.decode(tokens)


def test_statistics_are_named_and_log_phi_comes_from_them(target, sequences):
    potential = target.potential
    assert isinstance(potential, Potential)
    tokens, texts = sequences
    prompts = [PROMPTS[1]] * len(texts)
    stats = statistics_of(potential, texts, prompts, tokens)
    assert list(stats) == potential.names and target.reward_name == potential.names[0]
    for value in stats.values():
        assert value.dtype == torch.float64 and value.shape == (len(texts),) and torch.isfinite(value).all()
    log_phi = potential.log_phi(stats)
    assert log_phi.dtype == torch.float64 and log_phi.shape == (len(texts),) and not log_phi.isnan().any()
    assert torch.equal(potential(texts, prompts, tokens), log_phi)
    assert (log_phi > float("-inf")).any()  # the example leaves the target some mass


def test_a_prefix_potential_never_rules_out_a_prefix_that_some_extension_satisfies(target, sequences):
    potential = target.potential
    if not isinstance(potential, PrefixPotential):
        pytest.skip("judges whole sequences only")
    tokens, texts = sequences
    prompts = [PROMPTS[1]] * len(texts)
    satisfied = [x for x, lp in zip(tokens, potential(texts, prompts, tokens).tolist()) if lp > float("-inf")]
    prefixes = sorted({tuple(x[:k]) for x in satisfied for k in range(len(x))
                       if not set(x[:k]) & set(target.prior.eos_ids.tolist())})
    prefix_texts = target.prior.decode(prefixes)
    psi = prefix_log_phi(potential, prefix_texts, [PROMPTS[1]] * len(prefixes), [list(p) for p in prefixes])
    assert (psi > float("-inf")).all(), [p for p, v in zip(prefix_texts, psi.tolist()) if v == float("-inf")]
    # And it steers: it rules some prefix out (a hard constraint) or weighs prefixes apart (a soft potential).
    open_ended = [x for x in tokens if not set(x) & set(target.prior.eos_ids.tolist())]
    psi = prefix_log_phi(potential, target.prior.decode(open_ended), [PROMPTS[1]] * len(open_ended), open_ended)
    assert (psi == float("-inf")).any() or psi.max() - psi.min() > 1e-3
