"""Scoring through the output head in chunks (`bayeslm.distributions.head`) gives today's unfused scores and gradients.

Tolerances: in float64 the fused and the naive computation differ only by summation order, |Δ| ≤ 1e-10. In fp32
the fused path reduces over the vocabulary in other shapes than the unfused one (chunked products, one log-softmax
per chunk), so values move by a few ulps: |Δ| ≤ 1e-5 on per-token log-probs and KLs of a few nats. A gradient sums
over every scored position, so its error scales with its largest entries: |Δ| ≤ 1e-5·max|∇| per parameter
tensor.
Backward either reuses the distributions of forward (`keep`, the default at these sizes) or recomputes them
(`keep=0`): both are checked against the naive formula.
"""

import contextlib
import copy

import pytest
import torch
from conftest import PROMPTS

from bayeslm.distributions import scoring
from bayeslm.distributions.head import KEEP_ELEMENTS, Head, token_scores
from bayeslm.distributions.lm import LM


@contextlib.contextmanager
def unfused():
    """Today's path: the [B, L, V] log-distributions."""
    original = scoring.fused_heads
    scoring.fused_heads = lambda lm, kl_to=None: None
    try:
        yield
    finally:
        scoring.fused_heads = original


def naive(hidden, weight, targets, prior_hidden, prior_weight, temperature):
    """The unfused formula on [N, V] tensors, as `scoring._unfused_scores` computes it."""
    log_p = (hidden @ weight.T / temperature).log_softmax(-1)
    log_q = (prior_hidden @ prior_weight.T / temperature).log_softmax(-1)
    terms = torch.where(log_p > float("-inf"), log_p.exp() * (log_p - log_q), torch.zeros(()))
    return log_p.gather(-1, targets[:, None]).squeeze(-1), terms.sum(-1).clamp(min=0)


def head_inputs(dtype, n=13, hidden_size=6, vocab=11, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = (scale * torch.randn(n, hidden_size, generator=g, dtype=dtype)).requires_grad_()
    weight = torch.randn(vocab, hidden_size, generator=g, dtype=dtype).requires_grad_()
    prior_hidden = scale * torch.randn(n, hidden_size, generator=g, dtype=dtype)
    prior_weight = torch.randn(vocab, hidden_size, generator=g, dtype=dtype)
    targets = torch.randint(vocab, (n,), generator=g)
    return hidden, weight, targets, prior_hidden, prior_weight


def values_and_grads(fn, hidden, weight, seed=1):
    """Both scores and the gradients of a random linear combination of them."""
    log_probs, kl = fn()[:2]
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(log_probs.shape, generator=g, dtype=log_probs.dtype) for _ in range(2))
    grads = torch.autograd.grad((a * log_probs).sum() + (b * kl).sum(), [hidden, weight])
    return [log_probs.detach(), kl.detach(), *grads]


KEEP = [pytest.param(KEEP_ELEMENTS, id="kept"), pytest.param(0, id="recomputed")]


@pytest.mark.parametrize("keep", KEEP)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_head_matches_the_naive_formula_in_float64(temperature, keep):
    hidden, weight, targets, prior_hidden, prior_weight = head_inputs(torch.float64)
    fused = values_and_grads(lambda: token_scores(hidden, Head(weight, temperature), targets, prior_hidden,
                                                  Head(prior_weight, temperature), chunk=4, keep=keep),
                             hidden, weight)
    reference = values_and_grads(lambda: naive(hidden, weight, targets, prior_hidden, prior_weight, temperature),
                                 hidden, weight)
    for x, y in zip(fused, reference):
        assert torch.allclose(x, y, rtol=0, atol=1e-10), (x - y).abs().max()


@pytest.mark.parametrize("keep", KEEP)
def test_fused_head_passes_gradcheck(keep):
    hidden, weight, targets, prior_hidden, prior_weight = head_inputs(torch.float64, n=5, vocab=7)
    assert torch.autograd.gradcheck(
        lambda h, w: token_scores(h, Head(w, 0.7), targets, prior_hidden, Head(prior_weight, 1.3), chunk=2,
                                  keep=keep)[:2],
        (hidden, weight))
    assert torch.autograd.gradcheck(lambda h, w: token_scores(h, Head(w, 0.7), targets, chunk=2, keep=keep)[0],
                                    (hidden, weight))


@pytest.mark.parametrize("keep", KEEP)
def test_tokens_whose_probability_underflows_to_zero_score_like_the_unfused_path(keep):
    # Hidden states 300× larger: logits spread over thousands of nats, and many probabilities are exactly 0, even
    # in float64 (below e^-745), where the comparison can be tight.
    hidden, weight, targets, prior_hidden, prior_weight = head_inputs(torch.float64, scale=300.0)
    assert ((hidden @ weight.T).log_softmax(-1).exp() == 0).any()
    fused = values_and_grads(lambda: token_scores(hidden, Head(weight), targets, prior_hidden, Head(prior_weight),
                                                  chunk=4, keep=keep), hidden, weight)
    reference = values_and_grads(lambda: naive(hidden, weight, targets, prior_hidden, prior_weight, 1.0),
                                 hidden, weight)
    for x, y in zip(fused, reference):
        assert torch.isfinite(x).all()
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-9), (x - y).abs().max()  # scores of thousands of nats


def test_several_chunks_give_the_result_of_one():
    hidden, weight, targets, prior_hidden, prior_weight = head_inputs(torch.float32)

    def scores(chunk):
        return values_and_grads(lambda: token_scores(hidden, Head(weight, 0.7), targets, prior_hidden,
                                                     Head(prior_weight, 0.7), chunk=chunk), hidden, weight)

    for x, y in zip(scores(3), scores(len(targets))):
        assert torch.allclose(x, y, rtol=1e-6, atol=1e-6)


def test_no_graph_is_kept_under_no_grad():
    hidden, weight, targets, prior_hidden, prior_weight = head_inputs(torch.float32)
    with torch.no_grad():
        log_probs, kl, prior_log_probs = token_scores(hidden, Head(weight), targets, prior_hidden, Head(prior_weight))
    assert log_probs.grad_fn is None and kl.grad_fn is None and prior_log_probs.grad_fn is None


def test_the_priors_scores_come_with_the_kl():
    hidden, weight, targets, prior_hidden, prior_weight = head_inputs(torch.float64)
    prior_log_probs = token_scores(hidden, Head(weight, 0.7), targets, prior_hidden, Head(prior_weight, 0.7),
                                   chunk=4)[2]
    expected = (prior_hidden @ prior_weight.T / 0.7).log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    assert not prior_log_probs.requires_grad
    assert torch.allclose(prior_log_probs, expected, rtol=0, atol=1e-10)


def test_head_of_final_hidden_states_reproduces_the_logits(prior):
    ids = torch.tensor([prior.encode_prompts(["the movie good not very"])[0]])
    with torch.no_grad():
        logits = prior.forward(input_ids=ids).logits
        hidden = scoring.forward_states(prior, True, input_ids=ids, use_cache=False)[0]  # no adapter, no autocast
    assert torch.equal(hidden @ scoring.output_head(prior).weight.T, logits)


def test_truncating_warps_keep_the_unfused_path(prior):
    assert scoring.output_head(prior) is not None and scoring.output_head(prior.warped(temperature=0.5)) is not None
    assert scoring.output_head(prior.warped(top_k=3)) is None and scoring.output_head(prior.warped(top_p=0.9)) is None


def full_fine_tuning(prior):
    """A model copied from the prior and moved away from it, every parameter trainable."""
    model = copy.deepcopy(prior.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    model.requires_grad_(True)
    return LM(model, prior.tokenizer, warp=prior.warp, name="model"), prior


def lora(prior):
    """A LoRA adapter on a copy of the prior (random init, so that it moves the model), with the adapter-off view
    as the prior, as `bayeslm.training.loop` builds them."""
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(prior.model).requires_grad_(False)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                           init_lora_weights=False, task_type="CAUSAL_LM"))
    model = LM(peft, prior.tokenizer, warp=prior.warp, name="model")
    return model, model.without_adapter()


@pytest.mark.parametrize("build", [full_fine_tuning, lora])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("side", ["left", "right"])
def test_fused_scores_and_gradients_match_the_unfused_path(prior, build, temperature, side):
    model, reference = build(prior.warped(temperature=temperature))
    assert scoring.fused_heads(model, reference) is not None
    samples = prior.sample(PROMPTS, n=8, max_new_tokens=6, seed=0)
    params = [p for p in model.model.parameters() if p.requires_grad]

    def run():
        log_probs, kl, _ = model.token_scores(samples.sample_prompts, samples.continuations, kl_to=reference,
                                              padding_side=side)
        g = torch.Generator().manual_seed(1)
        a, b = (torch.randn(log_probs.shape, generator=g) for _ in range(2))
        grads = torch.autograd.grad((a * log_probs).sum() + (b * kl).sum(), params)
        return [log_probs.detach(), kl.detach()], grads

    (values, grads) = run()
    with unfused():
        (expected, expected_grads) = run()
    assert (values[1] > 1e-3).any()  # the model is away from the prior
    for x, y in zip(values, expected):
        assert torch.allclose(x, y, rtol=0, atol=1e-5), (x - y).abs().max()
    for x, y in zip(grads, expected_grads):
        assert (x - y).abs().max() <= 1e-5 * y.abs().max(), (x - y).abs().max() / y.abs().max()


def test_bf16_autocast_scores_match_the_unfused_path(prior):
    model, reference = full_fine_tuning(prior)
    model.autocast = torch.bfloat16
    reference = reference.view(autocast=torch.bfloat16)  # a view: the session's prior stays fp32
    samples = prior.sample(PROMPTS, n=8, max_new_tokens=6, seed=0)
    with torch.no_grad():
        fused = model.token_scores(samples.sample_prompts, samples.continuations, kl_to=reference)
        with unfused():
            expected = model.token_scores(samples.sample_prompts, samples.continuations, kl_to=reference)
    for x, y in zip(fused, expected):
        assert x.dtype == torch.float32
        assert torch.allclose(x, y, rtol=0, atol=1e-5), (x - y).abs().max()
