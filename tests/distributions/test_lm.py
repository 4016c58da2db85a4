"""The foundation: the sampler and the scorer describe one distribution, whatever the padding."""

import pytest
import scipy.stats
import torch
from conftest import PROMPTS

from bayeslm.distributions.lm import LM
from bayeslm.distributions.loading import ModelNotFound, load_lm
from bayeslm.distributions.toy import toy_tokenizer
from bayeslm.distributions.warp import Warp
from bayeslm.measurement.exact import Exact, continuations
from bayeslm.modelling.potentials import Exponential


def test_toy_tokenizer_pads_with_eos(prior):
    assert prior.tokenizer.pad_token_id == prior.tokenizer.eos_token_id


@pytest.mark.parametrize("side", ["left", "right"])
def test_log_prob_rescores_samples(prior, side):
    samples = prior.sample(PROMPTS, n=64, max_new_tokens=6, seed=0)
    rescored = prior.log_prob(samples.sample_prompts, samples.continuations, padding_side=side)
    assert torch.allclose(rescored, samples.log_prob, atol=1e-4)
    assert samples.ended.any() and not samples.ended.all()  # both endings are exercised


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_log_prob(prior, side):
    samples = prior.sample(["", "the movie", "not very good the movie"], n=8, max_new_tokens=6, seed=1)
    batched = prior.log_prob(samples.sample_prompts, samples.continuations, padding_side=side)
    alone = torch.stack([prior.log_prob([p], [c])[0]
                         for p, c in zip(samples.sample_prompts, samples.continuations)])
    assert torch.allclose(batched, alone, atol=1e-4)


def test_rows_sharing_a_prompt_run_it_once(prior):
    """A prompt's samples run the prompt once, when sampled and when scored (its KV cache is repeated for each),
    and score as if each were alone, with the same gradient."""
    prompts = ["the movie", "not very good the movie"]
    samples = prior.sample(prompts, n=4, max_new_tokens=6, seed=3)
    lengths = [len(p) for p in prior.encode_prompts(prompts)]
    run = []  # tokens fed to the model per forward pass
    hook = prior.model.get_input_embeddings().register_forward_hook(lambda m, args, out: run.append(args[0].shape))
    try:
        prior.sample(prompts, n=4, max_new_tokens=6, seed=3)
        assert run[0] == (2, max(lengths))  # the prefill: each prompt once
        run.clear()
        params = [p for p in prior.model.parameters() if p.requires_grad]
        batched = prior.log_prob(samples.sample_prompts, samples.continuations)
        assert run == [(2, max(lengths)), (8, samples.length.max().item() - 1)]
        grads = torch.autograd.grad(batched.sum(), params)
    finally:
        hook.remove()
    alone = [prior.log_prob([p], [c]) for p, c in zip(samples.sample_prompts, samples.continuations)]
    alone_grads = torch.autograd.grad(torch.cat(alone).sum(), params)
    assert torch.allclose(batched, torch.cat(alone), atol=1e-5)
    for g, a in zip(grads, alone_grads):
        assert torch.allclose(g, a, rtol=1e-4, atol=1e-6 * a.abs().max().item())


def test_eos_is_counted_exactly_once(prior):
    eos = prior.eos_id
    words = prior.tokenizer("good movie", add_special_tokens=False)["input_ids"]
    prefix = prior.log_prob([""], [words])
    complete = prior.log_prob([""], [words + [eos]])
    next_token = prior.token_log_probs([""], [words + [eos]])[0]
    assert torch.allclose(complete - prefix, next_token[-1:], atol=1e-6)
    assert next_token[-1] < 0  # EOS has its own, non-trivial probability
    # A text continuation is a complete text: EOS appended once.
    assert torch.allclose(prior.log_prob([""], ["good movie"]), complete, atol=1e-6)


def test_samples_stop_at_eos_or_at_the_limit(prior):
    samples = prior.sample(PROMPTS, n=200, max_new_tokens=4, seed=2)
    for cont, ended, length in zip(samples.continuations, samples.ended.tolist(), samples.length.tolist()):
        assert len(cont) == length
        assert (cont[-1] == prior.eos_id) == ended
        assert prior.eos_id not in cont[:-1]
        assert ended or length == 4


def test_sampler_frequencies_match_exact_probabilities(prior):
    target = (prior * Exponential(lambda t, p: [0.0] * len(t), beta=1.0)).given(["the"], max_new_tokens=3)
    exact = Exact(target)
    samples = prior.sample(["the"], n=20000, max_new_tokens=3, seed=3)
    index = {tuple(s): i for i, s in enumerate(exact.sequences)}
    counts = torch.bincount(torch.tensor([index[tuple(c)] for c in samples.continuations]),
                            minlength=len(exact.sequences)).double()
    probs = exact.log_prior[0].exp()
    tv = 0.5 * (counts / counts.sum() - probs).abs().sum()
    # E[TV] of an empirical distribution of n draws is about sqrt(S / (2πn)) at worst.
    assert tv < 0.05
    # Pearson chi-square over outcomes with expected count >= 5, at significance 1e-3.
    keep = probs * 20000 >= 5
    expected = probs[keep] * 20000
    chi2 = ((counts[keep] - expected) ** 2 / expected).sum()
    assert chi2 < scipy.stats.chi2.ppf(1 - 1e-3, int(keep.sum()) - 1)


@pytest.mark.parametrize("warp", [Warp(temperature=0.7), Warp(top_k=3), Warp(top_p=0.8),
                                  Warp(temperature=1.3, top_k=4, top_p=0.9)])
def test_warped_log_probs_are_those_of_the_distribution_sampled(prior, warp):
    model = prior.warped(temperature=warp.temperature, top_k=warp.top_k, top_p=warp.top_p)
    samples = model.sample(PROMPTS, n=64, max_new_tokens=5, seed=4)
    assert torch.allclose(model.log_prob(samples.sample_prompts, samples.continuations), samples.log_prob,
                          atol=1e-4)
    # ... and the warped distribution is still normalised over the whole space.
    log_probs = model.log_prob(["the"] * len(seqs := continuations(8, [prior.eos_id], 3)), seqs)
    assert abs(torch.logsumexp(log_probs.double(), 0).item()) < 1e-5


def test_top_k_excludes_the_rest(prior):
    model = prior.warped(top_k=2)
    samples = model.sample([""], n=300, max_new_tokens=1, seed=5)
    assert len({c[0] for c in samples.continuations}) <= 2


def test_analytic_kl_sums_to_exact_sequence_kl(prior):
    model = prior.warped(temperature=1.6)
    seqs = continuations(8, [prior.eos_id], 3)
    prompts = ["the movie"] * len(seqs)
    log_q = model.log_prob(prompts, seqs).double()
    log_p = prior.log_prob(prompts, seqs).double()
    exact_kl = (log_q.exp() * (log_q - log_p)).sum()
    per_token = model.kl(prior, prompts, seqs).double()
    assert (per_token >= 0).all()
    assert torch.allclose((log_q.exp() * per_token).sum(), exact_kl, atol=1e-5)


def test_samples_are_reproducible_from_a_seed(prior):
    a = prior.sample(PROMPTS, n=8, max_new_tokens=4, seed=7)
    b = prior.sample(PROMPTS, n=8, max_new_tokens=4, seed=7)
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts


def test_empty_prompt_list_is_an_error(prior):
    with pytest.raises(ValueError, match="prompts is empty"):
        prior.sample([], n=1)


def test_prompt_longer_than_context_is_an_error(prior):
    with pytest.raises(ValueError, match="exceeds the context"):
        prior.sample(["the " * 40], n=1, max_new_tokens=4)


def test_missing_model_path_names_the_path(tmp_path):
    with pytest.raises(ModelNotFound, match=str(tmp_path / "nowhere")):
        load_lm(str(tmp_path / "nowhere"))


def test_tokenizer_without_eos_is_refused(prior):
    tokenizer = toy_tokenizer()
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="no EOS token"):
        LM(prior.model, tokenizer)


def test_saved_toy_loads_from_a_local_path(prior, tmp_path):
    prior.model.save_pretrained(tmp_path)
    prior.tokenizer.save_pretrained(tmp_path)
    loaded = load_lm(str(tmp_path))
    samples = prior.sample(PROMPTS, n=16, max_new_tokens=4, seed=8)
    assert torch.allclose(loaded.log_prob(samples.sample_prompts, samples.continuations).cpu(), samples.log_prob,
                          atol=1e-5)


def test_empty_continuation_scores_zero(prior):
    for side in ("left", "right"):
        assert prior.log_prob([""], [[]], padding_side=side).tolist() == [0.0]
    assert prior.kl(prior.warped(temperature=2.0), [""], [[]]).tolist() == [0.0]


def test_every_eos_id_ends_a_sample_and_the_enumeration():
    from bayeslm.distributions.toy import ToyConfig, toy_lm

    lm = toy_lm(ToyConfig(seed=1))
    lm.model.generation_config.eos_token_id = [0, 1]  # BOS doubles as a second EOS
    lm = LM(lm.model, lm.tokenizer)
    samples = lm.sample(["the"], n=300, max_new_tokens=3, seed=0)
    assert set(lm.eos_ids.tolist()) == {0, 1}
    for cont, ended in zip(samples.continuations, samples.ended.tolist()):
        assert not set(cont[:-1]) & {0, 1} and ended == (cont[-1] in (0, 1))
    target = (lm * Exponential(lambda t, p: [0.0] * len(t), beta=1.0)).given(["the"], max_new_tokens=3)
    assert abs(torch.logsumexp(Exact(target).log_prior, 1).item()) < 1e-5


def test_without_adapter_needs_an_adapter(prior):
    with pytest.raises(ValueError, match="no adapter layers"):
        prior.without_adapter()


def test_draw_follows_the_distribution_and_never_an_impossible_token():
    from bayeslm.distributions.tokens import draw

    probs = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    tokens = draw(probs.log().expand(20000, -1), torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=len(probs))
    assert counts[probs == 0].sum() == 0
    seen = probs > 0
    assert scipy.stats.chisquare(counts[seen].numpy(), (probs[seen] * len(tokens)).numpy()).pvalue > 1e-3


def test_a_temperature_whose_division_overflows_is_refused(prior):
    with pytest.raises(ValueError, match="at least 1e-06 .* top_k: 1"):
        prior.warped(temperature=1e-50)
