"""The proposal pool: samples of a proposal q scored against a target, the raw material of every sampler.

Every sampler draws continuations x ~ q(·|c) and weighs them by the log importance weight

    log w(x) = log P(x|c) − log q(x|c),      P = π0·φ the unnormalised target,

and differs only in what it does with the weights. A `Pool` holds scored samples row by row, any number per
prompt; `log_z` and `ess` are the importance-sampling figures every sampler can report about its proposals:

    log Ẑ(c) = log mean_i w_i                     unbiased for Z(c) on the linear scale
    ESS(c)   = (Σ_i w_i)² / Σ_i w_i²              summed over prompts, as in the scorecard
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from bayeslm import progress
from bayeslm.estimate import Estimate, NoSupport, combine
from bayeslm.lm import LM
from bayeslm.potentials import Statistics
from bayeslm.target import Target


@dataclass
class Pool:
    """Scored samples: row i continues `prompts[prompt_index[i]]`; every tensor is [N] (float64 for logs)."""

    prompts: list[str]
    prompt_index: torch.Tensor
    continuations: list[list[int]]
    texts: list[str]
    log_prior: torch.Tensor
    log_target: torch.Tensor
    log_proposal: torch.Tensor
    stats: Statistics

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def log_w(self) -> torch.Tensor:
        """log w = log P − log q, −inf where the target has no mass."""
        return self.log_target - self.log_proposal

    @property
    def sample_prompts(self) -> list[str]:
        return [self.prompts[i] for i in self.prompt_index.tolist()]

    def counts(self) -> torch.Tensor:
        """Number of rows of each prompt, [C]."""
        return torch.bincount(self.prompt_index, minlength=len(self.prompts))

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """values [N] as [C, n], for pools drawn by `propose` (n rows per prompt, grouped by prompt)."""
        return values.reshape(len(self.prompts), -1)

    def take(self, index: torch.Tensor) -> Pool:
        rows = index.tolist()
        return Pool(self.prompts, self.prompt_index[index], [self.continuations[i] for i in rows],
                    [self.texts[i] for i in rows], self.log_prior[index], self.log_target[index],
                    self.log_proposal[index], {k: v[index] for k, v in self.stats.items()})

    @staticmethod
    def cat(pools: Sequence[Pool]) -> Pool:
        first = pools[0]
        return Pool(first.prompts, torch.cat([p.prompt_index for p in pools]),
                    [c for p in pools for c in p.continuations], [t for p in pools for t in p.texts],
                    *(torch.cat([getattr(p, k) for p in pools]) for k in ("log_prior", "log_target", "log_proposal")),
                    {k: torch.cat([p.stats[k] for p in pools]) for k in first.stats})


def generators(proposal: LM, seed: int) -> tuple[torch.Generator, torch.Generator]:
    """One generator for drawing proposals (on the model's device), one for the sampler's own coin flips,
    seeded from the first so that the two streams never coincide."""
    draw = torch.Generator(device=proposal.device).manual_seed(seed)
    decide = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=draw, device=draw.device)))
    return draw, decide


@torch.no_grad()
def propose(target: Target, proposal: LM, n: int, *, generator: torch.Generator,
            prompts: Sequence[int] | None = None) -> Pool:
    """n samples of `proposal` for each prompt (indices into target.prompts, default all), scored, grouped by
    prompt. Drawn in chunks of about four model batches so that the progress bar moves."""
    proposal.check_compatible(target.prior)
    prompts = list(range(len(target.prompts))) if prompts is None else list(prompts)
    texts_of = [target.prompts[c] for c in prompts]
    per_call = max(1, 4 * proposal.batch_size // len(prompts))
    parts = []
    with progress.bar(n * len(prompts), "proposals") as bar:
        for start in range(0, n, per_call):
            k = min(per_call, n - start)
            samples = proposal.sample(texts_of, k, target.max_new_tokens, generator=generator)
            log_q = samples.log_prob.double()
            scored = target.score_samples(samples, proposal)
            index = torch.tensor(prompts).repeat_interleave(k)
            parts.append(Pool(target.prompts, index, samples.continuations, samples.texts, scored.log_prior,
                              scored.log_target, log_q, scored.stats))
            bar.update(len(samples))
    pool = Pool.cat(parts)
    return pool.take(torch.sort(pool.prompt_index, stable=True).indices)


def log_mean_exp(log_x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(log_x, -1) - math.log(log_x.shape[-1])


def log_z(log_w: torch.Tensor, prompt_index: torch.Tensor, C: int) -> tuple[Estimate, torch.Tensor]:
    """Importance-sampling log Ẑ per prompt [C] and their mean over prompts with its standard error."""
    per_prompt, influences = [], []
    for c in range(C):
        lw = log_w[prompt_index == c]
        log_z_c = log_mean_exp(lw)
        per_prompt.append(log_z_c.item())
        influences.append(torch.exp(lw - log_z_c) - 1 if math.isfinite(log_z_c) else torch.zeros_like(lw))
    return combine(per_prompt, influences), torch.tensor(per_prompt, dtype=torch.float64)


def ess(log_w: torch.Tensor, prompt_index: torch.Tensor, C: int) -> float:
    """Effective sample size (Σw)²/Σw² of each prompt's weights, summed over prompts (0 for a prompt whose
    weights are all zero)."""
    total = 0.0
    for c in range(C):
        lw = log_w[prompt_index == c]
        if torch.isfinite(lw).any():
            total += torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)).item()
    return total


def require_support(pool: Pool, method: str):
    """Stops when some prompt has no sample of positive target weight: nothing to resample or weigh."""
    alive = torch.zeros(len(pool.prompts), dtype=torch.bool)
    alive[pool.prompt_index[torch.isfinite(pool.log_w)]] = True
    if not alive.all():
        bad = [pool.prompts[c] for c in (~alive).nonzero().flatten().tolist()]
        raise NoSupport(f"{method}: every proposal for prompt(s) {bad} has zero target weight (none satisfies the "
                        "target's constraints). Draw more proposals, or use a proposal closer to the target")

