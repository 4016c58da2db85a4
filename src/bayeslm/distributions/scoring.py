"""The scoring engine behind `LM.log_prob`, `LM.token_log_probs` and `LM.kl`: one batched forward pass per
chunk of rows, with the same conventions as sampling so that a sample re-scored gets back its sampling
log-probability.

Rows that share a prompt (a prompt's n samples) run it once, then their continuations on its repeated KV cache,
as sampling does; otherwise each row runs prompt and continuation, padded on either side (positions count only
real tokens, so padding never changes a score). A continuation's EOS is scored like any other token.
"""

from __future__ import annotations

import weakref
from typing import Sequence

import torch
import torch.nn.functional as F

from bayeslm.distributions import head, masking
from bayeslm.distributions.runnable import Runnable
from bayeslm.distributions.tokens import distinct, pad, positions


def token_scores(lm: Runnable, kl_to: Runnable | None, prompts: Sequence[Sequence[int]],
                 continuations: Sequence[Sequence[int]], *, padding_side: str = "left"
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-token log-probabilities [B, L] of `lm` (gradients flow) and, with `kl_to`, the per-token
    KL(lm ‖ kl_to) [B, L] and kl_to's own per-token log-probabilities [B, L] from the same pass of it (no
    gradient): what KL-RL needs of the prior, in one forward pass of it. 0 past each continuation's end. Prompts
    and continuations come as token ids (`LM.token_scores` encodes and checks them).

    One forward pass of each model per chunk of `batch_size` rows; only [B, L] results are kept, so memory does
    not grow with the vocabulary times the number of rows. Where the warp is a temperature alone, the scores come
    from the final hidden states through the output head in chunks of positions (`bayeslm.distributions.head`),
    so not even one chunk's [B, L, V] log-distributions exist."""
    chunks = [(prompts[start:start + lm.batch_size], continuations[start:start + lm.batch_size])
              for start in range(0, len(continuations), lm.batch_size)]
    width = max((max((len(c) for c in conts), default=0) for _, conts in chunks), default=0)
    heads = fused_heads(lm, kl_to)
    scores = []  # per chunk: (log-probs, KL, the other's log-probs), each [rows, width] or None
    for chunk in chunks:
        if heads is not None:
            parts = _fused_scores(lm, chunk, padding_side, kl_to, heads)
        else:
            parts = _unfused_scores(lm, chunk, padding_side, kl_to)
        scores.append([None if x is None else F.pad(x, (0, width - x.shape[1])) for x in parts])
    return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*scores))


def _unfused_scores(lm, chunk, padding_side, kl_to):
    log_dists, targets, valid = _log_dists(lm, chunk, padding_side)
    zero = torch.zeros((), device=log_dists.device)
    # where() rather than a product: padded positions may hold -inf or NaN.
    lp = torch.where(valid, log_dists.gather(-1, targets[..., None]).squeeze(-1), zero)
    if kl_to is None:
        return lp, None, None
    with torch.no_grad():
        other_dists = _log_dists(kl_to, chunk, padding_side)[0]
    other_lp = torch.where(valid, other_dists.gather(-1, targets[..., None]).squeeze(-1), zero)
    vocab = min(log_dists.shape[-1], other_dists.shape[-1])
    log_p, log_q = log_dists[..., :vocab], other_dists[..., :vocab]
    # 0·log 0 = 0: tokens lm cannot emit contribute nothing, even where the other gives -inf.
    terms = torch.where(log_p > float("-inf"), log_p.exp() * (log_p - log_q), zero)
    return lp, torch.where(valid, terms.sum(-1).clamp(min=0), zero), other_lp  # clamp: rounding noise


def _fused_scores(lm, chunk, padding_side, kl_to, heads):
    hidden, targets, valid = scored_states(lm, chunk, padding_side, hidden=True)
    prior_hidden = None
    if kl_to is not None:
        with torch.no_grad():
            prior_hidden = scored_states(kl_to, chunk, padding_side, hidden=True)[0][valid]
    scores = head.token_scores(hidden[valid], heads[0], targets[valid], prior_hidden, heads[1])
    # Only valid positions were scored: the rest stay 0.
    return tuple(None if x is None else torch.zeros(valid.shape, device=x.device).masked_scatter(valid, x.float())
                 for x in scores)


def fused_heads(lm, kl_to: Runnable | None = None) -> tuple[head.Head, head.Head | None] | None:
    """The output heads of lm (and of kl_to) when scoring can go through them (`bayeslm.distributions.head`),
    else None."""
    mine = output_head(lm)
    if kl_to is None or mine is None:
        return (mine, None) if mine is not None else None
    other = output_head(kl_to)
    if other is None or other.weight.shape[0] != mine.weight.shape[0]:
        return None
    return mine, other


def output_head(lm) -> head.Head | None:
    """The output head as a `head.Head`, when the warped logits are exactly the head applied to the decoder's
    final hidden states: a temperature-only warp, no masks, a plain linear head, no soft-capping or scaling."""
    model = _causal_lm(lm)
    output = model.get_output_embeddings()
    if (lm.languages or lm.warp.top_k is not None or lm.warp.top_p is not None or type(output) is not torch.nn.Linear
            or output.bias is not None or not hasattr(model, "get_decoder")
            or any(getattr(model.config, k, None) is not None for k in _LOGIT_TRANSFORMS)
            or not _head_reproduces_logits(model)):
        return None
    return head.Head(output.weight, lm.warp.temperature, lm.autocast)


def _causal_lm(lm):
    """The Hugging Face causal LM itself (under a PEFT wrapper, with the adapter's layers in it)."""
    return lm.model.get_base_model() if hasattr(lm.model, "get_base_model") else lm.model


def forward_states(lm, hidden: bool, logits_to_keep: int = 0, **inputs):
    """One forward pass, inside `LM.running`: the decoder's final (normed) hidden states (`hidden`) or the logits,
    where `forward` would have kept logits, and the KV cache when the inputs ask for one."""
    if hidden:
        out = _causal_lm(lm).get_decoder()(**inputs)
        return out.last_hidden_state[:, -logits_to_keep:], out.cache
    out = lm.model(**inputs, logits_to_keep=logits_to_keep)
    return out.logits, out.cache


def _caches(lm) -> bool:
    """Whether a forward pass keeps its KV cache: transformers drops it in layers that recompute their
    activations (gradient checkpointing, in training mode)."""
    return not (lm.model.training and any(getattr(m, "gradient_checkpointing", False)
                                            for m in lm.model.modules()))


def _log_dists(lm, chunk, padding_side):
    """Warped next-token log-distributions along each continuation.

    Returns log_dists [B, L, V] (position j predicts continuation token j), targets [B, L] and valid [B, L].
    """
    logits, targets, valid = scored_states(lm, chunk, padding_side, hidden=False)
    log_dists = lm.warp.log_probs(logits)
    if lm.languages:  # the masks sampling applied, replayed along each continuation
        log_dists = masking.masked(log_dists, masking.along(lm.languages, chunk[1], log_dists.shape[1],
                                                            log_dists.shape[2]))
    return log_dists, targets, valid


def scored_states(lm, chunk, padding_side, hidden: bool):
    """The final hidden states (`hidden`) or the logits at the positions that predict each continuation token:
    states [B, L, ·] (position j predicts continuation token j), targets [B, L] and valid [B, L].

    Rows that share a prompt (a prompt's n samples) run it once when the model keeps a KV cache
    (`_shared_prompt_states`); otherwise each row runs prompt and continuation, padded on `padding_side`."""
    prompt_ids, conts = chunk
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    device = lm.device
    width = max(max(len(c) for c in conts), 1)
    cont_len = torch.tensor([len(c) for c in conts], device=device)
    steps = torch.arange(width, device=device)
    targets = pad([c or [lm.pad_id] for c in conts], lm.pad_id, "right")[0]
    targets = F.pad(targets, (0, width - targets.shape[1]), value=lm.pad_id).to(device)
    valid = steps[None, :] < cont_len[:, None]
    prompts, which = distinct(prompt_ids, device)
    if len(prompts) < len(prompt_ids) and _caches(lm):
        with lm.running():
            return _shared_prompt_states(lm, prompts, which, conts, width, hidden), targets, valid
    ids, mask = pad([p + c for p, c in zip(prompt_ids, conts)], lm.pad_id, padding_side)
    ids, mask = ids.to(device), mask.to(device)
    # Left padding ends every continuation at the last column, so only the last `keep` states are needed;
    # kept column keep-1-len+j predicts token j (the final column predicts past the end). 0 keeps every column.
    keep = min(width + 1, ids.shape[1]) if padding_side == "left" else 0
    with lm.running():
        states = forward_states(lm, hidden, input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                                logits_to_keep=keep, use_cache=False)[0]
    first = (keep - 1 - cont_len if padding_side == "left"
             else torch.tensor([len(p) - 1 for p in prompt_ids], device=device))
    cols = (first[:, None] + steps[None, :]).clamp(max=states.shape[1] - 1)
    return states[torch.arange(len(conts), device=device)[:, None], cols], targets, valid


def _shared_prompt_states(lm, prompts, which, conts, width, hidden):
    """`_scored_states` running each distinct prompt once (`prompts`; row i has `prompts[which[i]]`): its last
    state predicts every sample's first token, its KV cache is repeated for every sample, and the continuations
    (right-padded) run on it. With n samples per prompt of P tokens and continuations of L, the pass costs
    P + n·L positions per prompt instead of n·(P + L); gradients flow through the repeated cache back to the
    prompt's single pass."""
    device = lm.device
    ids, mask = pad(prompts, lm.pad_id, "left")
    ids, mask = ids.to(device), mask.to(device)
    last, cache = forward_states(lm, hidden, input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                                 logits_to_keep=1, use_cache=True)
    first = last[:, -1][which, None]  # predicts token 0
    if width == 1:
        return first
    cache.reorder_cache(which)
    # Token j (j < L-1) predicts token j+1; a continuation's last token predicts nothing.
    cont_ids, cont_mask = pad([c[:-1] for c in conts], lm.pad_id, "right")  # width - 1 columns
    mask = torch.cat([mask[which], cont_mask.to(device)], 1)
    rest = forward_states(lm, hidden, input_ids=cont_ids.to(device), attention_mask=mask,
                          position_ids=positions(mask)[:, ids.shape[1]:], cache=cache, use_cache=True)[0]
    return torch.cat([first, rest], 1)


# Config fields of models that transform the head's output (Gemma 2's soft-capping, Cohere's and Granite's scaling).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
_HEAD_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _head_reproduces_logits(model) -> bool:
    """Whether the output head applied to the decoder's final hidden states gives the model's own logits, checked
    once per model on a few tokens: a model may transform its logits in a way that no config field announces."""
    if model not in _HEAD_CHECKED:
        device = next(model.parameters()).device
        ids = torch.arange(min(8, model.get_output_embeddings().weight.shape[0]), device=device)[None]
        training = model.training
        model.eval()  # the same dropout-free pass both ways
        try:
            with torch.no_grad():
                logits = model(input_ids=ids).logits
                through_head = model.get_output_embeddings()(model.get_decoder()(input_ids=ids).last_hidden_state)
        finally:
            model.train(training)
        _HEAD_CHECKED[model] = torch.allclose(logits, through_head, rtol=1e-4, atol=1e-4)
    return _HEAD_CHECKED[model]
