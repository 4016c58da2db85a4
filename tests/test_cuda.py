"""The CUDA and bf16 paths: skipped without a GPU (CI has none); run on a GPU machine with
`pytest tests/test_cuda.py`. Tolerances are stated per precision: fp32 on a GPU agrees with the CPU to rounding
(kernels differ, cached decoding against a full pass); under bf16 autocast the sampler's cached single-token
products and the scorer's full-sequence products round differently, by up to ~1e-2 nats per token."""

import copy
import math

import pytest
import torch
from conftest import PROMPTS, config, metrics
from torch._dynamo.utils import counters

from bayeslm.distributions.loading import load_lm
from bayeslm.distributions.toy import ToyConfig, toy_lm
from bayeslm.training.run import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

TOLERANCE = {None: 1e-4, torch.bfloat16: 5e-2}  # nats per sequence of ≤ 4 tokens


@pytest.fixture(scope="module")
def on_gpu():
    cpu = toy_lm(ToyConfig(seed=0, train_steps=200))
    gpu = copy.copy(cpu)
    gpu.model = copy.deepcopy(cpu.model).to("cuda")
    return cpu, gpu


@pytest.mark.parametrize("precision", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_sampler_and_scorer_agree_on_cuda(on_gpu, precision):
    lm = on_gpu[1].view(autocast=precision)
    samples = lm.sample(PROMPTS, 256, 4, seed=0)
    for side in ("left", "right"):
        rescored = lm.log_prob(samples.sample_prompts, samples.continuations, padding_side=side).cpu()
        assert (rescored - samples.log_prob).abs().max() < TOLERANCE[precision]


@pytest.mark.parametrize("precision", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_compiled_decoding_on_cuda_draws_what_eager_decoding_draws(on_gpu, precision):
    """CUDA graphs (torch.compile's reduce-overhead mode) replayed on pooled static caches: the second call reuses
    the first one's graph and cache. In fp32 the tokens are the eager decoder's; under bf16 the static cache's
    attention over a longer, masked row rounds differently, so rare near-ties may draw another token there."""
    lm = on_gpu[1].view(autocast=precision)
    compiled = lm.view(decoding="compiled")
    compiled.sample(PROMPTS, 64, 4, seed=5)  # compiles and captures
    graphs = counters["stats"]["unique_graphs"]
    eager, again = lm.sample(PROMPTS, 64, 4, seed=0), compiled.sample(PROMPTS, 64, 4, seed=0)
    assert counters["stats"]["unique_graphs"] == graphs  # the second call compiled nothing
    assert counters["inductor"]["cudagraph_skips"] == 0  # and every step ran as a CUDA graph
    if precision is None:
        assert torch.equal(eager.tokens, again.tokens)
        assert torch.allclose(eager.token_log_probs, again.token_log_probs, atol=1e-5)
    rescored = lm.log_prob(again.sample_prompts, again.continuations).cpu()
    assert (rescored - again.log_prob).abs().max() < TOLERANCE[precision]


def test_cuda_scores_equal_cpu_scores(on_gpu):
    cpu, gpu = on_gpu
    samples = gpu.sample(PROMPTS, 128, 4, seed=1)
    on_cpu = cpu.log_prob(samples.sample_prompts, samples.continuations)
    assert torch.allclose(gpu.log_prob(samples.sample_prompts, samples.continuations).cpu(), on_cpu, atol=1e-4)
    kl_cpu = cpu.kl(cpu.warped(temperature=2.0), samples.sample_prompts, samples.continuations)
    kl_gpu = gpu.kl(gpu.warped(temperature=2.0), samples.sample_prompts, samples.continuations).cpu()
    assert torch.allclose(kl_gpu, kl_cpu, atol=1e-4)


def test_load_lm_places_models_on_the_gpu():
    assert load_lm("toy").device.type == "cuda"
    assert load_lm("toy", device="cpu").device.type == "cpu"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_training_on_cuda(tmp_path, precision, lora):
    settings = {"precision": precision, "device": "cuda", "eval_n": 16}
    if lora:
        settings["lora"] = {"r": 4}
    card = train(config(objective="klrl", **settings), tmp_path / "run", quiet=True).scorecard.to_json()
    records = metrics(tmp_path / "run")
    assert all(math.isfinite(r["loss"]) and r["kl_model_prior"] >= 0 for r in records)
    assert math.isfinite(card["kl_model_target"]["value"])
    # The saved model is on disk, device-free: it loads on the CPU.
    assert load_lm(str(tmp_path / "run" / "model"), device="cpu").device.type == "cpu"
