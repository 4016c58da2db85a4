"""The proposal pool: samples of a proposal q scored against a target, the raw material of every sampler.

Every sampler draws continuations x ~ q(·|c) and weighs them by the log importance weight

    log w(x) = log P(x|c) − log q(x|c),      P = π0·φ the unnormalised target,

and differs only in what it does with the weights. `propose` draws and scores them into a `ScoredSamples`,
any number per prompt; the figures every sampler reports about its proposals (log Ẑ, ESS) come from
`bayeslm.weights`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from bayeslm import progress
from bayeslm.distributions.lm import LM
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target


def generators(proposal: LM, seed: int) -> tuple[torch.Generator, torch.Generator]:
    """One generator for drawing proposals (on the model's device), one for the sampler's own coin flips,
    seeded from the first so that the two streams never coincide."""
    draw = torch.Generator(device=proposal.device).manual_seed(seed)
    decide = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=draw, device=draw.device)))
    return draw, decide


@torch.no_grad()
def propose(target: Target, proposal: LM, n: int, *, generator: torch.Generator,
            prompts: Sequence[int] | None = None) -> ScoredSamples:
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
            parts.append(target.score_samples(samples, proposal, prompts=target.prompts,
                                              prompt_index=torch.tensor(prompts).repeat_interleave(k)))
            bar.update(len(samples))
    return ScoredSamples.cat(parts).sorted_by_prompt()


def require_support(pool: ScoredSamples, method: str):
    """Stops when some prompt has no sample of positive target weight: nothing to resample or weigh."""
    pool.require_support(method, "Draw more proposals, or use a proposal closer to the target")

