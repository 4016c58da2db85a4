"""What every registered potential kind must satisfy, checked on each (a new kind adds its example below)."""

import pytest
import torch
from conftest import PROMPTS

from bayeslm.distributions.toy import ToyConfig, toy_lm
from bayeslm.measurement.exact import continuations
from bayeslm.modelling.potentials import POTENTIALS
from bayeslm.modelling.potentials.base import Potential, Tempered, statistics_of
from bayeslm.modelling.target import Target

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
    return Target(prior, built.build(prior, PROMPTS, 3), PROMPTS, 3)


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
    if not potential.judges_prefixes:
        pytest.skip("judges whole sequences only")
    tokens, texts = sequences
    prompts = [PROMPTS[1]] * len(texts)
    satisfied = [x for x, lp in zip(tokens, potential(texts, prompts, tokens).tolist()) if lp > float("-inf")]
    prefixes = sorted({tuple(x[:k]) for x in satisfied for k in range(len(x))
                       if not set(x[:k]) & set(target.prior.eos_ids.tolist())})
    prefix_texts = target.prior.decode(prefixes)
    psi = potential.prefix_log_phi(prefix_texts, [PROMPTS[1]] * len(prefixes), [list(p) for p in prefixes])
    assert (psi > float("-inf")).all(), [p for p, v in zip(prefix_texts, psi.tolist()) if v == float("-inf")]
    # And it steers: it rules some prefix out (a hard constraint) or weighs prefixes apart (a soft potential).
    open_ended = [x for x in tokens if not set(x) & set(target.prior.eos_ids.tolist())]
    psi = potential.prefix_log_phi(target.prior.decode(open_ended), [PROMPTS[1]] * len(open_ended), open_ended)
    assert (psi == float("-inf")).any() or psi.max() - psi.min() > 1e-3


def test_every_ability_a_potential_claims_holds_and_the_others_default_safely(target, sequences):
    """Each ability is asked of the potential (`bayeslm.modelling.potentials.base`): what it answers must be true on
    every continuation of the toy, and a potential without it gives the neutral answer."""
    potential, prior = target.potential, target.prior
    tokens, texts = sequences
    prompts = [PROMPTS[1]] * len(texts)
    log_phi = potential(texts, prompts, tokens)
    assert potential.build(prior, PROMPTS, 3) is potential  # built once: building again changes nothing
    if not potential.judges_prefixes:  # 1 on every prefix: it counts once the sequence ends
        assert torch.equal(potential.prefix_log_phi(texts, prompts, tokens), torch.zeros(len(texts)).double())
    bound = potential.log_bound(reward_max=1.0)
    assert bound is None or log_phi.max().item() <= bound + 1e-9
    tempered = potential.tempered()
    if tempered is not None:
        assert isinstance(tempered, Tempered)
        assert torch.allclose(log_phi, tempered.reward(texts, prompts) / tempered.beta)
        assert potential.log_bound() is None  # a reward's bound needs its largest value
    for language in potential.languages():  # the texts it accepts are exactly those φ keeps
        assert torch.equal(language.accepts(tokens), log_phi > float("-inf"))
    dense = potential.token_log_phi(prompts, tokens, prior.token_log_probs(prompts, tokens))
    if dense is not None:
        assert torch.allclose(dense.sum(-1).double(), log_phi, atol=1e-4)
    kl = potential.kl_to_prior()
    assert kl is None or kl["kl_to_prior"] >= 0
