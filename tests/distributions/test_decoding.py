"""The compiled decoder (a static KV cache, one compiled graph per step) samples what the eager one samples.

On the CPU the step is compiled with the `aot_eager` backend: the same graph capture as on a GPU (guards,
recompilation, in-place cache updates) in seconds, without generating kernels. tests/test_cuda.py runs the
CUDA-graph mode itself."""

import json

import pytest
import torch
import yaml
from conftest import TOY_TARGET, config, metrics
from peft import LoraConfig, get_peft_model
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from bayeslm.cli import main
from bayeslm.distributions import decoding
from bayeslm.distributions.lm import LM
from bayeslm.distributions.toy import ToyConfig, toy_lm, toy_tokenizer
from bayeslm.modelling.potentials import Exponential, Forbid
from bayeslm.samplers.smc import smc
from bayeslm.training.run import train

PROMPTS = ["", "the movie", "not very good the movie"]  # three widths: left padding in every batch

# Each test compiles decoding steps with torch.compile: seconds each.
pytestmark = pytest.mark.compile


@pytest.fixture(autouse=True)
def compiled_without_codegen(monkeypatch):
    monkeypatch.setitem(decoding._COMPILED, "cpu", torch.compile(decoding._step, backend="aot_eager",
                                                                 dynamic=False))
    torch._dynamo.reset()
    counters.clear()


def llama(**settings) -> LM:
    """A tiny Llama (rotary positions, grouped-query attention: SmolLM2's architecture) on the toy vocabulary."""
    tokenizer = toy_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LM(LlamaForCausalLM(config).eval(), tokenizer, name="llama", **settings)


def models():
    return {"gpt2": toy_lm(ToyConfig(seed=0, train_steps=50)), "llama": llama()}


def agree(eager, compiled, atol=1e-5):
    assert torch.equal(eager.tokens, compiled.tokens)
    assert torch.allclose(eager.token_log_probs, compiled.token_log_probs, atol=atol)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_compiled_decoding_draws_what_eager_decoding_draws(name):
    lm = models()[name]
    lm.batch_size = 8  # 12 rows: a full batch and a ragged one
    eager = lm.sample(PROMPTS, n=4, max_new_tokens=6, seed=0)
    compiled = lm.view(decoding="compiled").sample(PROMPTS, n=4, max_new_tokens=6, seed=0)
    agree(eager, compiled)
    assert eager.ended.any() and not eager.ended.all()


def test_compiled_sampler_and_scorer_agree():
    lm = llama(decoding="compiled")
    samples = lm.sample(PROMPTS, n=32, max_new_tokens=6, seed=1)
    for side in ("left", "right"):
        rescored = lm.log_prob(samples.sample_prompts, samples.continuations, padding_side=side)
        assert torch.allclose(rescored, samples.log_prob, atol=1e-4)


def test_batches_of_one_shape_reuse_one_graph_and_one_cache():
    """A new graph or a new cache for every batch would capture a CUDA graph again every batch."""
    lm = llama(decoding="compiled")
    for seed in range(3):
        lm.sample(PROMPTS, n=4, max_new_tokens=6, seed=seed)
    other = llama(decoding="compiled")  # another model of the same architecture: the same graph
    other.sample(PROMPTS, n=4, max_new_tokens=6, seed=0)
    lm.sample(PROMPTS, n=5, max_new_tokens=7, seed=0)  # 15 rows pad to 12's 16; 7 tokens share 6's length bucket
    assert counters["stats"]["unique_graphs"] == 1
    assert [len(free) for free in decoding._POOLS[lm.model].values()] == [1]
    lm.sample(PROMPTS, n=6, max_new_tokens=6, seed=0)  # 18 rows pad to 32: one more graph
    assert counters["stats"]["unique_graphs"] == 2


def test_compiled_decoding_under_bf16_autocast_keeps_the_eager_cache_dtypes():
    """Under autocast a rotary model's keys come out fp32 and its values bf16: the static cache must store both
    as the dynamic one does, and draw what it draws (bf16 products over a longer, masked row round differently:
    6e-4 nats per token here)."""
    lm = llama(autocast=torch.bfloat16)
    eager = lm.sample(PROMPTS, n=4, max_new_tokens=6, seed=0)
    compiled = lm.view(decoding="compiled").sample(PROMPTS, n=4, max_new_tokens=6, seed=0)
    agree(eager, compiled, atol=5e-3)


def test_compiled_smc_resamples_particles_and_their_caches():
    """SMC reorders each decoder's cache at every resampling; here the proposal is a LoRA model and the prior its
    adapter-off view: two compiled decoders alive at once on one network."""
    prior = llama()
    model = get_peft_model(prior.model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    proposal = LM(model, prior.tokenizer, name="lora")
    prior.model, prior.adapter_disabled = model, True
    target = (prior * Exponential(lambda texts, prompts: [t.count("good") for t in texts], beta=1.0)
              * Forbid(["bad"])).given(PROMPTS, max_new_tokens=5)
    draws = {way: smc(target, proposal.view(decoding=way), n=16, ess_threshold=1.0, seed=2)
             for way in ("eager", "compiled")}
    assert draws["eager"].figures["resampling_steps"] >= 2
    assert draws["eager"].samples.continuations == draws["compiled"].samples.continuations
    assert torch.allclose(draws["eager"].log_weight, draws["compiled"].log_weight, atol=1e-4)
    assert torch.allclose(draws["eager"].log_z_per_prompt, draws["compiled"].log_z_per_prompt, atol=1e-4)


def test_unknown_decoding_is_refused():
    with pytest.raises(ValueError, match="decoding must be one of eager, compiled, got 'fast'"):
        llama(decoding="fast")


def test_a_model_torch_cannot_compile_is_refused_with_the_fix(monkeypatch):
    def failing_backend(graph, inputs):
        raise NotImplementedError("no kernel for this operator")

    monkeypatch.setitem(decoding._COMPILED, "cpu", torch.compile(decoding._step, backend=failing_backend))
    with pytest.raises(ValueError, match=r"could not compile the decoding step of llama \(BackendCompilerFailed: "
                                         r".*no kernel for this operator.*\); use decoding: eager"):
        llama(decoding="compiled").sample(PROMPTS, n=2, max_new_tokens=4, seed=0)


def test_sliding_window_model_is_refused_with_the_fix():
    tokenizer = toy_tokenizer()
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    lm = LM(MistralForCausalLM(config).eval(), tokenizer, name="mistral", decoding="compiled")
    with pytest.raises(ValueError, match="sliding-window.*use decoding: eager"):
        lm.sample(PROMPTS, n=2, max_new_tokens=4, seed=0)


@pytest.mark.parametrize("objective", ["klrl", "dpg"])
def test_training_with_compiled_decoding_takes_the_eager_step(tmp_path, objective):
    """`decoding: compiled` reaches every sampler of a run (the model's, DPG's proposal, the final evaluation)
    and changes how it runs, not what it draws: the same seed takes the same first step. (Later steps drift
    apart: AdamW's first update is lr·sign(g), so gradient entries that are zero up to rounding move by a full
    lr one way or the other.)"""
    for way in ("eager", "compiled"):
        train(config(objective=objective, decoding=way, steps=1, eval_n=8), tmp_path / way, quiet=True)
    [eager], [compiled] = metrics(tmp_path / "eager"), metrics(tmp_path / "compiled")
    for key in ("loss", "grad_norm", "reward_mean", "kl_model_target", "ess", "entropy"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-5, abs=1e-6), key
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled step did run


def test_sample_command_decodes_as_asked_and_draws_the_same(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BAYESLM_DECODING", "eager")  # restored after the test: --decoding sets it
    target = tmp_path / "target.yaml"
    target.write_text(yaml.safe_dump({"prior": {"toy": {"seed": 0, "train_steps": 50}}, "prompts": PROMPTS,
                                      "max_new_tokens": 4, "potentials": [{"forbid": {"strings": ["bad"]}}]}))
    drawn = {}
    for way in ("eager", "compiled"):
        out = tmp_path / f"{way}.jsonl"
        assert main(["sample", "--target", str(target), "--method", "smc", "-n", "8", "--decoding", way,
                     "--out", str(out), "--quiet"]) == 0
        drawn[way] = [json.loads(line)["tokens"] for line in out.read_text().splitlines()]
    assert drawn["compiled"] == drawn["eager"]
    assert counters["stats"]["unique_graphs"] >= 1
    monkeypatch.setenv("BAYESLM_DECODING", "fast")
    assert main(["sample", "--target", str(target), "--method", "ancestral", "-n", "2"]) == 2
    assert "$BAYESLM_DECODING is 'fast': set it to one of eager, compiled" in capsys.readouterr().err


def test_train_command_takes_the_decoding_from_the_environment_unless_the_config_says(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESLM_DECODING", "compiled")
    settings = {"target": TOY_TARGET, "steps": 1, "samples_per_prompt": 2, "eval_n": 0}
    for name, extra in (("from-env", {}), ("from-config", {"decoding": "eager"})):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**settings, **extra}))
        assert main(["train", str(path), "--out", str(tmp_path / name), "--quiet"]) == 0
    assert yaml.safe_load((tmp_path / "from-env/config.yaml").read_text())["decoding"] == "compiled"
    assert yaml.safe_load((tmp_path / "from-config/config.yaml").read_text())["decoding"] == "eager"


def test_the_library_reads_no_setting_from_the_environment(monkeypatch):
    """$BAYESLM_DEVICE and $BAYESLM_DECODING are the command line's defaults: `bl.load_lm` and `bl.train` take their
    settings as arguments only, and no module outside the CLI reads a BAYESLM_ variable but the cache location."""
    import re
    from pathlib import Path

    import bayeslm as bl

    monkeypatch.setenv("BAYESLM_DECODING", "fast")
    monkeypatch.setenv("BAYESLM_DEVICE", "cuda:7")
    lm = bl.load_lm({"toy": {"seed": 0, "train_steps": 0}})
    assert lm.decoding == "eager" and lm.device.type == "cpu"
    src = Path(bl.__file__).parent
    readers = {str(p.relative_to(src)) for p in src.rglob("*.py")
               if re.search(r"environ(\.get)?[\[(]\s*\"BAYESLM_(?!CACHE)", p.read_text())}
    assert readers == {"cli/common.py"}
