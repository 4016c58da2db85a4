"""The power and teacher potentials against exact values on the toy: π* ∝ π0^α and π* ∝ π0^(1−γ)·π_T^γ, and SMC
steered by the power's prefix potential drawing exactly from π0^α."""

import pytest
import torch
from conftest import PROMPTS

import bayeslm as bl
from bayeslm.config import ConfigError
from bayeslm.distributions.toy import ToyConfig, toy_lm
from bayeslm.measurement.exact import Exact
from bayeslm.modelling.target_file import parse_target
from bayeslm.samplers import smc


@pytest.fixture(scope="module")
def teacher_lm():
    return bl.load_lm({"toy": {"seed": 1}})


@pytest.mark.parametrize("alpha", [0.5, 2.0, 4.0])
def test_the_power_target_is_the_prior_to_the_power_alpha_renormalised_over_sequences(prior, alpha):
    exact = Exact((prior * bl.power(prior, alpha)).given(PROMPTS, max_new_tokens=3))
    assert torch.allclose(exact.log_posterior, torch.log_softmax(alpha * exact.log_prior, 1), atol=1e-9)
    assert torch.allclose(exact.log_z, torch.logsumexp(alpha * exact.log_prior, 1), atol=1e-9)


def test_the_power_target_is_not_a_low_temperature(prior):
    # π0^α renormalises over whole sequences; a temperature 1/α renormalises each next token: different laws.
    exact = Exact((prior * bl.power(prior, 2.0)).given(PROMPTS, max_new_tokens=3))
    tempered = exact.log_probs(prior.warped(temperature=0.5))
    assert (tempered - exact.log_posterior).abs().max() > 0.05


@pytest.mark.slow
def test_smc_steered_by_the_power_draws_from_it(prior):
    target = (prior * bl.power(prior, 2.0)).given(PROMPTS, max_new_tokens=3)
    exact = Exact(target)
    draws = smc(target, n=4000, ess_threshold=1.0, seed=5)  # resampling at every step: steered by ψ throughout
    index = {tuple(x): j for j, x in enumerate(exact.sequences)}
    samples, weights = draws.samples, draws.weights()
    for c in range(len(PROMPTS)):
        rows = (samples.prompt_index == c).nonzero().flatten().tolist()
        law = torch.zeros(len(exact.sequences), dtype=torch.float64)
        for w, i in zip(weights[rows].tolist(), rows):
            law[index[tuple(samples.continuations[i])]] += w
        assert 0.5 * (law - exact.log_posterior[c].exp()).abs().sum() < 0.05  # TV, against ~0.5 for the prior
    assert abs(draws.log_z.value - exact.log_z.mean().item()) <= 4 * draws.log_z.stderr


def test_a_teacher_at_weight_1_is_the_teacher_and_between_is_the_geometric_bridge(prior, teacher_lm):
    exact = Exact((prior * bl.teacher(prior, teacher_lm, 1.0)).given(PROMPTS, max_new_tokens=3))
    teacher = exact.log_probs(teacher_lm)
    assert torch.allclose(exact.log_posterior, teacher, atol=1e-5) and exact.log_z.abs().max() < 1e-5
    bridge = Exact((prior * bl.teacher(prior, teacher_lm, 0.5)).given(PROMPTS, max_new_tokens=3))
    assert torch.allclose(bridge.log_posterior, torch.log_softmax(0.5 * exact.log_prior + 0.5 * teacher, 1),
                          atol=1e-9)


def test_power_and_teacher_are_written_in_a_target_file():
    target = parse_target({"prior": {"toy": {"seed": 0}}, "prompts": PROMPTS, "max_new_tokens": 3,
                           "potentials": [{"power": {"alpha": 2}}, {"teacher": {"model": {"toy": {"seed": 1}},
                                                                                 "weight": 0.5}}]})
    assert repr(target.potential) == "Power(alpha=2) * Teacher(toy, weight=0.5)"
    assert target.reward_name == "log_prior"


def test_a_teacher_with_another_tokenizer_is_refused(prior):
    other = toy_lm(ToyConfig(seed=0, byte_level=True))
    with pytest.raises(ConfigError, match="does not share the tokenizer"):
        bl.teacher(prior, other)


def test_a_teacher_directory_resolves_against_the_target_file_not_the_working_directory(tmp_path, teacher_lm,
                                                                                       monkeypatch):
    import yaml

    from bayeslm.modelling.target_file import load_target

    (tmp_path / "targets").mkdir()
    teacher_lm.model.save_pretrained(tmp_path / "targets" / "teacher")
    teacher_lm.tokenizer.save_pretrained(tmp_path / "targets" / "teacher")
    path = tmp_path / "targets" / "t.yaml"
    path.write_text(yaml.safe_dump({"prior": {"toy": {"seed": 1}}, "prompts": PROMPTS, "max_new_tokens": 2,
                                    "potentials": [{"teacher": {"model": "teacher", "weight": 1.0}}]}))
    monkeypatch.chdir(tmp_path)  # elsewhere: "teacher" is no directory here
    target = load_target(path)
    exact = Exact(target)
    assert exact.log_z.abs().max() < 1e-5  # the teacher is the prior's own weights: φ = 1
