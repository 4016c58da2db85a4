"""Sequential Monte Carlo (SMC) over tokens: particles grow one token at a time and are resampled when their
weights degenerate, steered by potentials that can judge a prefix.

When to use it: the target's evidence can be read on prefixes (a potential that `judges_prefixes`,
such as a forbidden string or a required opening), so that doomed continuations are dropped as soon as they are
doomed and their compute goes to live ones. For a potential defined only on whole sequences there is nothing to
steer by: a particle's weight changes only when it ends, and when all end at max_new_tokens SMC *is* importance
sampling (with the prior as proposal its weights are then φ). Use `importance` or `sir` there.

Each of N particles per prompt holds a prefix y_≤t drawn token by token from q and a log-weight. With ψ_t the
potential on the prefix (φ itself once the sequence has ended with EOS or at max_new_tokens; factors that
cannot judge prefixes count as 1 until then), the weight grows at step t by

    π0(y_t | y_<t) ψ_t(y_≤t) / (q(y_t | y_<t) ψ_{t−1}(y_<t)),

so that, without resampling, the final weight is π0(x)φ(x)/q(x), the importance weight. When a prompt's
effective sample size (Σw)²/Σw² falls below `ess_threshold`·N, its particles are resampled multinomially in
proportion to w and their weights reset to 1. The product over these epochs of the mean weight,

    Ẑ = Π_k mean_i w_i^(k),

is an unbiased estimate of Z (Del Moral 2004); log Ẑ is biased low by Jensen's inequality, by about half the
relative variance of Ẑ. One run also estimates that variance (Lee & Whiteley 2018), from the genealogy of the
particles: with E_i the initial particle that final particle i descends from (its Eve), W_i its normalised final
weight and m the resampling events of the run,

    Var(Ẑ)/Ẑ² ≈ 1 − (N/(N−1))^(m+1) · Σ_{i,j: E_i ≠ E_j} W_i W_j,

unbiased for Var(Ẑ)/Z² under multinomial resampling (without resampling it is the importance-sampling
variance); its square root is the standard error of log Ẑ (delta method). When every surviving particle
descends from one Eve the estimate can see nothing (it is 1), and when it comes out ≤ 0 its noise exceeds what
it estimates (resampling at almost every step with few particles): either way that log Ẑ is marked unreliable
and given no standard error. The final particles, with their weights, approximate π*. Particles run through the
model (and the prior, when it differs from the proposal) with the same conventions as `LM.sample`: left padding,
positions counting real tokens, a KV cache whose rows are reordered with the particles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Annotated

import torch

from bayeslm import progress
from bayeslm.config import unit_interval
from bayeslm.distributions import decoding, masking
from bayeslm.distributions.lm import LM
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.samplers.base import Option, sampler
from bayeslm.samplers.pool import generators
from bayeslm.samplers.result import Draws
from bayeslm.weights import Estimate, effective_sample_size, log_mean_exp, total_ess

NEG_INF = float("-inf")


@sampler("smc", "Sequential Monte Carlo over tokens, steered by prefix potentials; Ẑ unbiased.")
@torch.no_grad()
def smc(target: Target, proposal: LM | None = None, n: int = 256, *,
        ess_threshold: Annotated[float, Option("resample a prompt's particles when their ESS falls below this "
                                               "fraction", unit_interval)] = 0.5,
        seed: int = 0) -> Draws:
    """n weighted particles per prompt; the result's `log_z_per_prompt` holds each prompt's log Ẑ and
    `figures["resampling_steps"]` counts the resampling events (over all prompts)."""
    proposal = proposal or target.prior
    proposal.check_compatible(target.prior)
    if not 0 <= ess_threshold <= 1:
        raise ValueError(f"ess_threshold is a fraction of the particles, in [0, 1]; got {ess_threshold}")
    sampling, decide = generators(proposal, seed)
    per_chunk = max(1, proposal.batch_size // n)  # prompts whose particles go through the model together
    C = len(target.prompts)
    parts, log_weights, log_zs, variances, resamplings = [], [], [], [], 0
    with progress.bar(C * target.max_new_tokens, "SMC", unit="token") as bar:
        for start in range(0, C, per_chunk):
            chunk = list(range(start, min(C, start + per_chunk)))
            pool, log_w, log_z, variance, count = _run(target, proposal, chunk, n, ess_threshold, sampling, decide,
                                                       bar)
            parts.append(pool)
            log_weights.append(log_w)
            log_zs.append(log_z)
            variances.append(variance)
            resamplings += count
    pool, log_w, log_z = ScoredSamples.cat(parts), torch.cat(log_weights), torch.cat(log_zs)
    variance = torch.cat(variances)
    # Unbiased, the estimate can fall to 0 or below: it is then a difference of two numbers near 1 whose noise
    # exceeds the variance it estimates, and no standard error is given.
    stderr = torch.where(variance > 0, variance.clamp(min=0).sqrt(), math.nan)
    warning = _unreliable(variance, target.prompts)
    finite = log_z[torch.isfinite(log_z)]
    draws = Draws("smc", pool, log_w, requested=n, proposals=torch.full((C,), n), ess=total_ess(log_w.reshape(C, n)),
                  log_z=Estimate(log_z.mean().item(), stderr.square().sum().sqrt().item() / C, warning),
                  log_z_per_prompt=log_z, log_z_stderr_per_prompt=stderr,
                  figures={"resampling_steps": float(resamplings)})
    if len(finite) < C:
        dead = [target.prompts[c] for c in (~torch.isfinite(log_z)).nonzero().flatten().tolist()]
        draws.notes.append(f"every particle died (zero target weight) for prompt(s) {dead}: use more particles")
    return draws


@dataclass
class Particles:
    """Every per-particle quantity of a run in one place: `take` reorders them all at a resampling, so that none
    can be left in the old order (which would be a silent wrong weight)."""

    tokens: torch.Tensor  # [R, L] on the proposal's device, pad after each end
    length: torch.Tensor  # [R]
    finished: torch.Tensor  # [R] bool
    log_prior: torch.Tensor  # [R] float64: log π0 of the tokens so far
    log_q: torch.Tensor  # [R] float64: log q of the tokens so far
    log_psi: torch.Tensor  # [R] float64: log ψ of the prefix, log φ once finished (ψ before the first token is 1)
    log_w: torch.Tensor  # [R] float64: the weight since the last resampling
    eve: torch.Tensor  # [R]: the initial particle each descends from
    holders: list  # the decoders and masks, whose per-row state `reorder(index)` reorders too

    @classmethod
    def start(cls, rows: int, length: int, pad_id: int, device, holders: list) -> Particles:
        def zero():
            return torch.zeros(rows, dtype=torch.float64)

        return cls(torch.full((rows, length), pad_id, dtype=torch.long, device=device),
                   torch.full((rows,), length, dtype=torch.long), torch.zeros(rows, dtype=torch.bool),
                   zero(), zero(), zero(), zero(), torch.arange(rows), holders)

    def take(self, index: torch.Tensor):
        """Reorders every particle quantity, and every holder's rows, by `index` [R] (with repeats)."""
        for f in fields(self):
            if f.name != "holders":
                value = getattr(self, f.name)
                setattr(self, f.name, value[index.to(value.device)])
        for holder in self.holders:
            holder.reorder(index)


def _run(target, proposal, chunk, N, ess_threshold, sampling, decide, bar):
    """SMC for the prompts `chunk`, N particles each; returns their pool, final log-weights, log Ẑ per prompt,
    the estimated relative variance of Ẑ per prompt and the number of resampling events."""
    prior = target.prior
    P, L = len(chunk), target.max_new_tokens
    prompts = [target.prompts[c] for c in chunk]
    particle_prompts = [p for p in prompts for _ in range(N)]
    q_run = decoding.decoder(proposal, proposal.encode_prompts(particle_prompts), L)
    # The prior needs its own forward pass only when it is another model; another warp reuses the logits.
    p_run = q_run if prior.shares_forward(proposal) else decoding.decoder(
        prior, prior.encode_prompts(particle_prompts), L)
    masks = masking.Masks(proposal.languages, P * N) if proposal.languages else None  # a masked proposal's matchers
    holders = [h for h in (q_run, None if p_run is q_run else p_run, masks) if h is not None]
    s = Particles.start(P * N, L, proposal.pad_id, proposal.device, holders)
    log_z = torch.zeros(P, dtype=torch.float64)
    events = torch.zeros(P, dtype=torch.long)  # resampling events per prompt
    for t in range(L):
        _extend(target, proposal, s, q_run, p_run, masks, particle_prompts, t, sampling)
        bar.update(P)
        if bool(s.finished.all()) or t == L - 1:
            bar.update(P * (L - 1 - t))
            break
        index, log_mean_w = _resample(s.log_w.reshape(P, N), ess_threshold, decide)
        if index is not None:
            resampled = torch.isfinite(log_mean_w)
            events += resampled.long()
            log_z += log_mean_w.nan_to_num(nan=0.0)
            s.take(index)
            s.log_w = torch.where(resampled.repeat_interleave(N), 0.0, s.log_w)
        q_run.feed(s.tokens[:, t])
        if p_run is not q_run:
            p_run.feed(s.tokens[:, t])
    q_run.close()
    p_run.close()
    log_z += log_mean_exp(s.log_w.reshape(P, N))
    continuations = [row[:k] for row, k in zip(s.tokens.cpu().tolist(), s.length.tolist())]
    pool = target.score(target.prompts, torch.tensor(chunk).repeat_interleave(N), continuations,
                        proposal.decode(continuations), log_proposal=s.log_q, log_prior=s.log_prior,
                        proposal=proposal.name)
    variance = _relative_variance(s.log_w.reshape(P, N), s.eve.reshape(P, N), events)
    return pool, s.log_w, log_z, variance, int(events.sum())


def _extend(target, proposal, s: Particles, q_run, p_run, masks, prompts, t, sampling):
    """Draws token t of every live particle from the proposal and weighs it by π0/q of the token and the change
    of ψ (φ for a particle that ends there)."""
    prior = target.prior
    q_dist, token, token_logq = decoding.next_token(proposal, q_run, masks, sampling)
    p_dist = (q_dist if p_run is q_run and prior.same_distribution(proposal)
              else prior.warp.log_probs(p_run.logits))
    live = ~s.finished
    s.tokens[:, t] = torch.where(live.to(token.device), token, proposal.pad_id)
    step_q = token_logq.double().cpu()
    step_p = p_dist.to(token.device).gather(-1, token[:, None]).squeeze(-1).double().cpu()
    ends = live & (torch.isin(token, proposal.eos_ids.to(token.device)).cpu() | (t == s.tokens.shape[1] - 1))
    s.length[ends] = t + 1
    new_psi = s.log_psi.clone()
    alive = ~torch.isneginf(s.log_psi)  # a dead particle stays dead: no need to judge it
    steering = target.potential.judges_prefixes
    _judge(target, s.tokens, prompts, ends & alive, live & ~ends & alive if steering else None, t, new_psi)
    # A particle already at zero weight stays there (and −inf − −inf must not become NaN).
    step = torch.where(live, step_p - step_q + new_psi - s.log_psi, torch.zeros((), dtype=torch.float64))
    s.log_w = torch.where(torch.isneginf(s.log_psi), NEG_INF, s.log_w + step)
    s.log_prior = s.log_prior + torch.where(live, step_p, 0.0)
    s.log_q = s.log_q + torch.where(live, step_q, 0.0)
    if masks is not None:
        masks.advance(token.cpu(), live)
    s.finished |= ends
    s.log_psi = new_psi


def _judge(target, tokens, prompts, ends, unfinished, t, log_psi):
    """Writes into log_psi: log φ of the particles that just ended, log ψ of the unfinished ones (when the
    potential can judge prefixes; otherwise they keep ψ = 1)."""
    for rows, whole in ((ends, True), (unfinished, False)):
        if rows is None or not rows.any():
            continue
        index = rows.nonzero().flatten()
        prefixes = tokens[index.to(tokens.device), :t + 1].cpu().tolist()
        texts = target.prior.decode(prefixes)
        chosen = [prompts[i] for i in index.tolist()]
        log_psi[index] = (target.potential(texts, chosen, prefixes) if whole
                          else target.potential.prefix_log_phi(texts, chosen, prefixes))


def _unreliable(variance: torch.Tensor, prompts: list[str]) -> str | None:
    """Why the standard error of log Ẑ cannot be trusted, when it cannot: the genealogy collapsed to one Eve (the
    estimate is then exactly 1), or the estimate is not positive."""
    def named(mask):
        return sorted({prompts[c] for c in mask.nonzero().flatten().tolist()})

    reasons = []
    if (collapsed := named(variance >= 1 - 1e-9)):
        reasons.append(f"the particles of prompt(s) {collapsed} all descend from one initial particle")
    if (negative := named(variance <= 0)):
        reasons.append(f"the variance estimate for prompt(s) {negative} is not positive (more noise than variance)")
    if not reasons:
        return None
    return ("; ".join(reasons) + ", so this run cannot tell how far log Ẑ may be off: use more particles, a lower "
            "ess_threshold (fewer resampling steps), or repeat with other seeds")


def _relative_variance(log_w: torch.Tensor, eve: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
    """Lee & Whiteley's estimate of Var(Ẑ)/Z² per prompt (see the module docstring) from the final log-weights
    [P, N], the Eve of each particle [P, N] and each prompt's resampling events [P]; NaN where all particles died."""
    P, N = log_w.shape
    if N == 1:  # one particle: no pair to compare
        return torch.full((P,), math.nan, dtype=torch.float64)
    weight = torch.softmax(log_w, 1)  # NaN rows where every weight is 0
    per_eve = torch.zeros(P, N, dtype=torch.float64).scatter_add(1, eve - eve[:, :1] // N * N, weight)
    apart = 1 - per_eve.square().sum(1)  # Σ over pairs with different Eves of W_i W_j
    return 1 - (N / (N - 1)) ** (events.double() + 1) * apart


def _resample(log_w: torch.Tensor, ess_threshold: float, decide: torch.Generator):
    """Multinomial resampling of the prompts [P, N] whose ESS fell below ess_threshold·N. Returns the particle
    index [P·N] (None when no prompt needs it) and, per prompt, the log mean weight of the epoch that ends
    (NaN for prompts left alone; a prompt whose particles all died is left alone: there is nothing to resample)."""
    P, N = log_w.shape
    total = torch.logsumexp(log_w, 1)
    due = torch.isfinite(total) & (effective_sample_size(log_w) < ess_threshold * N)
    if not due.any():
        return None, None
    index = torch.arange(P * N).reshape(P, N)
    picked = torch.multinomial(torch.softmax(log_w[due], 1), N, replacement=True, generator=decide)
    index[due] = picked + (torch.arange(P)[due] * N)[:, None]
    log_mean_w = torch.where(due, total - math.log(N), math.nan)
    return index.flatten(), log_mean_w
