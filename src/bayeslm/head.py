"""Scoring through the output head in chunks of positions, so that no [N, V] tensor ever exists.

At N scored positions with final hidden states h [N, H] and a head W [V, H], the warped next-token
distribution is log p = log_softmax(h Wᵀ / T). Scoring needs only two numbers per position: log p(target) and,
against a prior q built the same way from its own h0 and W0, the exact KL(p‖q) = Σ_v p_v (log p_v − log q_v)
(nats). Materialising log p for every position costs N·V floats, plus the copies autograd keeps for backward
(V = 49152 for SmolLM2); here each chunk of positions is reduced to those two numbers at once, and backward
recomputes the chunk's logits from the saved inputs instead of keeping them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK_ELEMENTS = 1 << 22  # positions per chunk × V: 16 MB per fp32 [chunk, V] tensor


@dataclass(frozen=True)
class Head:
    """How final hidden states become a warped log-distribution: log_softmax(h Wᵀ / temperature).

    The product runs in `dtype` (bf16 under autocast, like the unfused head), the softmax in fp32 at least."""

    weight: torch.Tensor
    temperature: float = 1.0
    dtype: torch.dtype | None = None

    def compute(self) -> torch.dtype:
        return self.dtype or self.weight.dtype


def token_scores(hidden: torch.Tensor, head: Head, targets: torch.Tensor, prior_hidden: torch.Tensor | None = None,
                 prior_head: Head | None = None, chunk: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """log p(targets) [N] and, given the prior's hidden states and head, KL(p‖q) [N] ≥ 0 and log q(targets) [N]
    (a by-product: the prior's score of the same tokens), in fp32 (fp64 for fp64 inputs). Gradients flow to
    `hidden` and `head.weight`, never to the prior."""
    if chunk is None:
        chunk = max(1, CHUNK_ELEMENTS // head.weight.shape[0])
    prior = (prior_hidden.detach(), prior_head.weight.detach()) if prior_head is not None else (None, None)
    heads = (head.temperature, head.compute(), *(
        (prior_head.temperature, prior_head.compute()) if prior_head is not None else (None, None)))
    log_probs, kl, prior_log_probs = _HeadScores.apply(hidden, head.weight, *prior, targets, heads, chunk)
    return (log_probs, *((kl, prior_log_probs) if prior_head is not None else (None, None)))


def _log_dist(hidden, weight, temperature, dtype):
    """Warped log-distribution [n, V] of a chunk; `weight` is already in `dtype`."""
    logits = hidden.to(dtype) @ weight.T
    return (logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature).log_softmax(-1)


def _kl_terms(log_p, log_q):
    """p (log p − log q) per token; 0·log 0 = 0 where p cannot emit the token, even where q gives −inf."""
    return torch.where(log_p > float("-inf"), log_p.exp() * (log_p - log_q), torch.zeros((), device=log_p.device))


class _HeadScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, prior_hidden, prior_weight, targets, heads, chunk):
        temperature, dtype, prior_temperature, prior_dtype = heads
        w = weight.to(dtype)  # cast once, not per chunk (a bf16 copy of the head under autocast)
        w0 = prior_weight.to(prior_dtype) if prior_weight is not None else None
        n = hidden.shape[0]
        out = torch.promote_types(hidden.dtype, torch.float32)
        log_probs = hidden.new_zeros(n, dtype=out)
        kl = hidden.new_zeros(n, dtype=out)  # before the clamp: backward needs its sign and value
        prior_log_probs = hidden.new_zeros(n, dtype=out)
        for s in range(0, n, chunk):
            rows = slice(s, s + chunk)
            log_p = _log_dist(hidden[rows], w, temperature, dtype)
            log_probs[rows] = log_p.gather(-1, targets[rows, None]).squeeze(-1)
            if w0 is not None:
                log_q = _log_dist(prior_hidden[rows], w0, prior_temperature, prior_dtype)
                kl[rows] = _kl_terms(log_p, log_q).sum(-1)
                prior_log_probs[rows] = log_q.gather(-1, targets[rows, None]).squeeze(-1)
        ctx.save_for_backward(hidden, weight, prior_hidden, prior_weight, targets, kl)
        ctx.heads, ctx.chunk = heads, chunk
        ctx.mark_non_differentiable(prior_log_probs)
        return log_probs, kl.clamp(min=0), prior_log_probs  # the clamp removes rounding noise below 0

    @staticmethod
    def backward(ctx, grad_log_probs, grad_kl, _):
        hidden, weight, prior_hidden, prior_weight, targets, kl = ctx.saved_tensors
        temperature, dtype, prior_temperature, prior_dtype = ctx.heads
        w = weight.to(dtype)
        w0 = prior_weight.to(prior_dtype) if prior_weight is not None else None
        want_hidden, want_weight = ctx.needs_input_grad[:2]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32)) \
            if want_weight else None
        # Like clamp(min=0): no gradient through a KL that rounded below 0.
        grad_kl = torch.where(kl >= 0, grad_kl, 0.0)
        for s in range(0, hidden.shape[0], ctx.chunk):
            rows = slice(s, s + ctx.chunk)
            log_p = _log_dist(hidden[rows], w, temperature, dtype)
            # d/dlogits of log p(t) is onehot(t) − p; of KL it is p ⊙ (log p − log q − KL).
            coeff = -grad_log_probs[rows, None].to(log_p.dtype)
            if w0 is not None:
                log_q = _log_dist(prior_hidden[rows], w0, prior_temperature, prior_dtype)
                excess = torch.where(log_p > float("-inf"), log_p - log_q - kl[rows, None],
                                     torch.zeros((), device=log_p.device))
                coeff = coeff + grad_kl[rows, None].to(log_p.dtype) * excess
            grad_logits = log_p.exp() * coeff
            grad_logits.scatter_add_(-1, targets[rows, None], grad_log_probs[rows, None].to(log_p.dtype))
            grad_logits = (grad_logits / temperature).to(dtype)
            if want_hidden:
                grad_hidden[rows] = grad_logits @ w
            if want_weight:
                grad_weight += grad_logits.T @ hidden[rows].to(dtype)
        if want_weight:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None
