"""Scoring through the output head in chunks of positions, so that no [N, V] tensor exists unless it is small.

At N scored positions with final hidden states h [N, H] and a head W [V, H], the warped next-token
distribution is log p = log_softmax(h Wᵀ / T). Scoring needs only two numbers per position: log p(target) and,
against a prior q built the same way from its own h0 and W0, the exact KL(p‖q) = Σ_v p_v (log p_v − log q_v)
(nats). Materialising log p for every position costs N·V floats, plus the copies autograd keeps for backward
(V = 49152 for SmolLM2); here each chunk of positions is reduced to those two numbers at once. Backward needs
p and log p − log q again: forward keeps them when N·V is small (a training slice on a CPU), and otherwise
backward recomputes them chunk by chunk from the saved hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK_ELEMENTS = 1 << 22  # positions per chunk × V: 16 MB per fp32 [chunk, V] tensor
# Up to this many positions × V, forward keeps each position's p and log p − log q (2 × 128 MB in fp32) so that
# backward need not run both heads again; it covers the 8-row slices a CPU back-propagates (8 × 32 positions ×
# SmolLM2's 49152 = 12.6 M), whose speed-up docs/performance.md gives (`speedups`). Larger slices recompute them
# chunk by chunk.
KEEP_ELEMENTS = 1 << 25


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
                 prior_head: Head | None = None, chunk: int | None = None, keep: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """log p(targets) [N] and, given the prior's hidden states and head, KL(p‖q) [N] ≥ 0 and log q(targets) [N]
    (a by-product: the prior's score of the same tokens), in fp32 (fp64 for fp64 inputs). Gradients flow to
    `hidden` and `head.weight`, never to the prior. Backward reuses the distributions of forward when N × V ≤
    `keep` (default `KEEP_ELEMENTS`), and recomputes them otherwise."""
    vocab = head.weight.shape[0]
    chunk = chunk or max(1, CHUNK_ELEMENTS // vocab)
    keep = KEEP_ELEMENTS if keep is None else keep
    backward = torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad)
    prior = (prior_hidden.detach(), prior_head.weight.detach()) if prior_head is not None else (None, None)
    heads = (head.temperature, head.compute(), *(
        (prior_head.temperature, prior_head.compute()) if prior_head is not None else (None, None)))
    log_probs, kl, prior_log_probs = _HeadScores.apply(hidden, head.weight, *prior, targets, heads, chunk,
                                                       backward and hidden.shape[0] * vocab <= keep)
    return (log_probs, *((kl, prior_log_probs) if prior_head is not None else (None, None)))


def _log_dist(hidden, weight, temperature, dtype):
    """Warped log-distribution [n, V] of a chunk; `weight` is already in `dtype`."""
    logits = (hidden.to(dtype) @ weight.T).to(torch.promote_types(dtype, torch.float32))
    return (logits / temperature if temperature != 1 else logits).log_softmax(-1)  # ÷ 1 would be a pass over [n, V]


def _distributions(rows, hidden, w, prior_hidden, w0, heads):
    """Chunk `rows`' log p and p [n, V] and, against a prior, log q and log p − log q (0 where p cannot emit the
    token, even where q gives −inf, so that 0·log 0 = 0)."""
    temperature, dtype, prior_temperature, prior_dtype = heads
    log_p = _log_dist(hidden[rows], w, temperature, dtype)
    if w0 is None:
        return log_p, log_p.exp(), None, None
    log_q = _log_dist(prior_hidden[rows], w0, prior_temperature, prior_dtype)
    diff = torch.where(log_p > float("-inf"), log_p - log_q, torch.zeros((), device=log_p.device))
    return log_p, log_p.exp(), log_q, diff


class _HeadScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, prior_hidden, prior_weight, targets, heads, chunk, keep):
        _, dtype, _, prior_dtype = heads
        w = weight.to(dtype)  # cast once, not per chunk (a bf16 copy of the head under autocast)
        w0 = prior_weight.to(prior_dtype) if prior_weight is not None else None
        n = hidden.shape[0]
        out = torch.promote_types(hidden.dtype, torch.float32)
        log_probs = hidden.new_zeros(n, dtype=out)
        kl = hidden.new_zeros(n, dtype=out)  # before the clamp: backward needs its sign and value
        prior_log_probs = hidden.new_zeros(n, dtype=out)
        kept = [hidden.new_empty(n, w.shape[0], dtype=out) for _ in range(1 if w0 is None else 2)] if keep else []
        for s in range(0, n, chunk):
            rows = slice(s, s + chunk)
            log_p, p, log_q, diff = _distributions(rows, hidden, w, prior_hidden, w0, heads)
            log_probs[rows] = log_p.gather(-1, targets[rows, None]).squeeze(-1)
            if w0 is not None:
                kl[rows] = (p * diff).sum(-1)
                prior_log_probs[rows] = log_q.gather(-1, targets[rows, None]).squeeze(-1)
            for whole, part in zip(kept, (p, diff)):
                whole[rows] = part
        ctx.save_for_backward(hidden, weight, prior_hidden, prior_weight, targets, kl, *kept)
        ctx.heads, ctx.chunk = heads, chunk
        ctx.mark_non_differentiable(prior_log_probs)
        return log_probs, kl.clamp(min=0), prior_log_probs  # the clamp removes rounding noise below 0

    @staticmethod
    def backward(ctx, grad_log_probs, grad_kl, _):
        hidden, weight, prior_hidden, prior_weight, targets, kl, *kept = ctx.saved_tensors
        temperature, dtype, _, prior_dtype = ctx.heads
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
            if kept:
                p, diff = kept[0][rows], kept[1][rows] if w0 is not None else None
            else:
                _, p, _, diff = _distributions(rows, hidden, w, prior_hidden, w0, ctx.heads)
            # d/dlogits of log p(t) is onehot(t) − p; of KL it is p ⊙ (log p − log q − KL).
            coeff = -grad_log_probs[rows, None].to(p.dtype)
            if w0 is not None:
                coeff = coeff + grad_kl[rows, None].to(p.dtype) * (diff - kl[rows, None])
            grad_logits = p * coeff
            grad_logits.scatter_add_(-1, targets[rows, None], grad_log_probs[rows, None].to(p.dtype))
            grad_logits = (grad_logits / temperature if temperature != 1 else grad_logits).to(dtype)
            if want_hidden:
                grad_hidden[rows] = grad_logits @ w
            if want_weight:
                product = grad_logits.T, hidden[rows].to(dtype)
                if grad_weight.dtype == dtype:  # in place: no [V, H] temporary per chunk, much faster on a CPU
                    grad_weight.addmm_(*product)
                else:  # a bf16 product summed in fp32
                    grad_weight += torch.mm(*product)
        if want_weight:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None
