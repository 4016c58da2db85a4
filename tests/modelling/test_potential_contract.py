"""What every registered potential kind must satisfy, checked on each (a new kind adds its example below)."""

import pytest
import torch
from conftest import PROMPTS

from bayeslm.measurement.exact import continuations
from bayeslm.modelling.potentials import POTENTIALS, PrefixPotential
from bayeslm.modelling.target import Potential, Target

# One target-file entry per kind, on the toy's words (good, bad, movie, the, very, not).
EXAMPLES = {
    "exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5},
    "constraint": {"predicate": "length", "at_least": 1, "at_most": 2},
    "exponential_family": {"features": ["length", {"keyword": ["movie"]}], "coefficients": [-0.3, 1.0]},
    "moments": {"features": [{"keyword": ["good"]}], "moments": [0.5], "n": 256},
    "forbid": {"strings": ["bad"]},
    "starts_with": {"text": "the"},
    "best_of": {"reward": {"keyword": ["good"]}, "n": 4},
}


def test_every_registered_kind_has_an_example():
    assert sorted(EXAMPLES) == POTENTIALS.names()


@pytest.fixture(params=sorted(EXAMPLES))
def target(request, prior):
    """The example as a target file would build it, on the session's toy prior."""
    built = POTENTIALS.build({request.param: EXAMPLES[request.param]}, "potentials[0]")
    potential = built.build(prior, PROMPTS, 3) if hasattr(built, "build") else built
    return Target(prior, potential, PROMPTS, 3)


@pytest.fixture
def texts(target):
    prior = target.prior
    return prior.decode(continuations(prior.model.config.vocab_size, prior.eos_ids.tolist(), 3))


def test_statistics_are_named_and_log_phi_comes_from_them(target, texts):
    potential = target.potential
    assert isinstance(potential, Potential)
    prompts = [PROMPTS[1]] * len(texts)
    stats = potential.statistics(texts, prompts)
    assert list(stats) == potential.names and target.reward_name == potential.names[0]
    for value in stats.values():
        assert value.dtype == torch.float64 and value.shape == (len(texts),) and torch.isfinite(value).all()
    log_phi = potential.log_phi(stats)
    assert log_phi.dtype == torch.float64 and log_phi.shape == (len(texts),) and not log_phi.isnan().any()
    assert torch.equal(potential(texts, prompts), log_phi)
    assert (log_phi > float("-inf")).any()  # the example leaves the target some mass


def test_a_prefix_potential_never_rules_out_a_prefix_that_some_extension_satisfies(target, texts):
    potential = target.potential
    if not isinstance(potential, PrefixPotential):
        pytest.skip("judges whole sequences only")
    prompts = [PROMPTS[1]] * len(texts)
    satisfied = [t for t, lp in zip(texts, potential(texts, prompts).tolist()) if lp > float("-inf")]
    words = [t.split() for t in satisfied]
    prefixes = sorted({" ".join(w[:k]) for w in words for k in range(len(w) + 1)})
    psi = potential.prefix_log_phi(prefixes, [PROMPTS[1]] * len(prefixes))
    assert (psi > float("-inf")).all(), [p for p, v in zip(prefixes, psi.tolist()) if v == float("-inf")]
    # And it does rule out some prefix: otherwise it would not steer.
    assert (potential.prefix_log_phi(texts, prompts) == float("-inf")).any()
