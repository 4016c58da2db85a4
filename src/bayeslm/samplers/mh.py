"""Metropolis–Hastings with suffix regeneration: chains over whole continuations that resample their endings.

From the current state x (a continuation of L tokens, EOS included where it ended), pick a position t uniformly
among 0, B, 2B, … < L (B the `block`), keep the prefix x<t and draw a new ending from the proposal,
x' = x<t · y with y ~ q(·|c, x<t), cut at the target's max_new_tokens. Move there with probability

    min(1, [P(x')·q(x_{≥t}|c, x<t)·m(x)] / [P(x)·q(x'_{≥t}|c, x<t)·m(x')]),   P = π0·φ,  m(x) = ⌈L(x)/B⌉

the exact Metropolis–Hastings ratio (m counts the positions each state offers), so π* is left invariant (Karan &
Du 2026, "Reasoning with Sampling", for π* ∝ π0^α with the prior as proposal). With q = π0 the prior's factors
cancel and the ratio is φ(x')/φ(x)·m(x)/m(x'): a chain needs no evaluation of π0 at all.

Unlike independent Metropolis–Hastings, a move keeps what the state got right and rewrites the rest, so a chain
near a mode of a sharp target accepts often where an independent proposal almost never would. `chains` chains
per prompt start from independent proposals and run `burn_in` moves before `⌈n/chains⌉` kept moves; the summary
reports the acceptance rate, the autocorrelation of log P along the chains and the effective sample size that
follows; the starting proposals give the importance-sampling estimate of log Z.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from bayeslm import progress, weights
from bayeslm.config import non_negative, positive
from bayeslm.distributions import decoding
from bayeslm.distributions.lm import LM
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.samplers.base import Option, sampler
from bayeslm.samplers.imh import chain_draws
from bayeslm.samplers.pool import generators
from bayeslm.samplers.result import Draws


@sampler("mh", "Metropolis–Hastings chains that regenerate each state's ending from a random position.")
@torch.no_grad()
def mh(target: Target, proposal: LM | None = None, n: int = 256, *,
       chains: Annotated[int | None, Option("chains per prompt (null: min(n, 16))", positive)] = None,
       burn_in: Annotated[int, Option("moves discarded per chain", non_negative)] = 20,
       block: Annotated[int, Option("regenerate from positions that are multiples of this many tokens",
                                    positive)] = 1,
       seed: int = 0) -> Draws:
    """n samples per prompt from `chains` chains per prompt (default min(n, 16)), each run for `burn_in` moves
    plus ⌈n/chains⌉ kept moves, regenerating from a position that is a multiple of `block`."""
    proposal = proposal or target.prior
    proposal.check_compatible(target.prior)
    chains = chains or min(n, 16)
    kept = math.ceil(n / chains)
    C, T = len(target.prompts), target.max_new_tokens
    draw, decide = generators(proposal, seed)
    start = proposal.sample(target.prompts, chains, T, generator=draw)
    state = target.score_samples(start, proposal)  # rows grouped by prompt, `chains` each
    token_logq = start.token_log_probs.double()  # [C·chains, T]: q's log-probability of each token of the state
    estimate, per_prompt = weights.log_z(state.grid(state.log_w), state.prompts)
    prior_is_proposal = proposal.same_distribution(target.prior)
    prompt_ids = proposal.encode_prompts(target.prompts)
    kept_rows, trace, accepted = [], [], []
    with progress.bar(burn_in + kept, "MH", unit="move") as bar:
        for step in range(burn_in + kept):
            lengths = torch.tensor([len(x) for x in state.continuations])
            positions = torch.ceil(lengths / block).long()  # m(x): the positions a state offers
            t = (torch.floor(torch.rand(len(state), generator=decide, dtype=torch.float64) * positions) * block).long()
            candidate, new_logq = _regenerate(target, proposal, state, token_logq, t, prompt_ids, draw,
                                              prior_is_proposal)
            new_positions = torch.ceil(torch.tensor([len(x) for x in candidate.continuations]) / block).long()
            old_suffix = _from(token_logq, t).sum(-1)
            new_suffix = _from(new_logq, t).sum(-1)
            log_ratio = (candidate.log_target - state.log_target + old_suffix - new_suffix
                         + positions.double().log() - new_positions.double().log())
            # From a zero-weight state every move is accepted (the ratio is +inf); NaN (0/0) is a rejection.
            accept = torch.rand(len(state), generator=decide, dtype=torch.float64).log() < log_ratio
            state = _merge(state, candidate, accept)
            token_logq = torch.where(accept[:, None], new_logq, token_logq)
            if step >= burn_in:
                kept_rows.append(state)
                trace.append(state.log_target.reshape(C, chains))
                accepted.append(accept)
            bar.update()
    # Time-major within each prompt, so that n below chains·kept is taken evenly from the chains.
    pool = ScoredSamples.cat(kept_rows).sorted_by_prompt()
    order = torch.arange(len(pool)).reshape(C, kept, chains).reshape(C, -1)[:, :n].flatten()
    samples = pool.take(order)
    return chain_draws("mh", samples, torch.stack(trace, -1), torch.stack(accepted), kept, requested=n,
                       proposals=torch.full((C,), chains * (1 + burn_in + kept)), log_z=estimate,
                       log_z_per_prompt=per_prompt)

def _from(per_token: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The per-token values at positions ≥ t of each row (0 before)."""
    return torch.where(torch.arange(per_token.shape[1])[None, :] >= t[:, None], per_token, 0.0)


def _regenerate(target: Target, proposal: LM, state: ScoredSamples, token_logq: torch.Tensor, t: torch.Tensor,
                prompt_ids, generator, prior_is_proposal: bool) -> tuple[ScoredSamples, torch.Tensor]:
    """Each state's prefix x<t with a new ending from the proposal, scored against the target, and the
    proposal's per-token log-probabilities of the new states [B, T]."""
    T = target.max_new_tokens
    prefixes = [x[:k] for x, k in zip(state.continuations, t.tolist())]
    rows = [prompt_ids[c] + p for c, p in zip(state.prompt_index.tolist(), prefixes)]
    budget = T - int(t.min())
    suffixes, suffix_logq = [], torch.zeros(len(rows), budget)
    with proposal.running():
        for start in range(0, len(rows), proposal.batch_size):
            chunk = slice(start, start + proposal.batch_size)
            tokens, logps = decoding.ancestral(proposal, rows[chunk], budget, generator)
            suffixes.append(tokens)
            suffix_logq[chunk] = logps
    tokens = torch.cat(suffixes)
    room = (T - t).clamp(max=budget)  # the ending is cut where the target's space ends
    keep = torch.arange(budget)[None, :] < room[:, None]
    tokens, suffix_logq = torch.where(keep, tokens, proposal.pad_id), torch.where(keep, suffix_logq, 0.0)
    length, _ = decoding.lengths(tokens, proposal.eos_ids)
    length = torch.minimum(length, room)
    continuations = [p + row[:k] for p, row, k in zip(prefixes, tokens.tolist(), length.tolist())]
    new_logq = torch.zeros_like(token_logq)
    for i, (k, m) in enumerate(zip(t.tolist(), length.tolist())):
        new_logq[i, :k] = token_logq[i, :k]
        new_logq[i, k:k + m] = suffix_logq[i, :m].double()
    log_q = new_logq.sum(-1)
    candidate = target.score(state.prompts, state.prompt_index, continuations, proposal.decode(continuations),
                             log_proposal=log_q, log_prior=log_q if prior_is_proposal else None)
    return candidate, new_logq


def _merge(state: ScoredSamples, candidate: ScoredSamples, accept: torch.Tensor) -> ScoredSamples:
    """The candidate where accepted, else the state: both rows in one pool, each row taken from its side."""
    both = ScoredSamples.cat([state, candidate])
    return both.take(torch.where(accept, torch.arange(len(state)) + len(state), torch.arange(len(state))))
