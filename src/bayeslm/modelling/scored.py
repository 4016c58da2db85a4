"""Samples scored under a target: the one container that samplers, the training loop and the scorecard share.

Row i is a continuation of `prompts[prompt_index[i]]` drawn from a proposal q, with

    log_proposal   log q(x|c)      the distribution it was drawn from (the model itself when on-policy)
    log_prior      log π0(x|c)     NaN until scored (an objective that runs the prior fills it in itself)
    log_phi        log φ(x,c)      −inf where a hard constraint fails
    stats          the potentials' named statistics (the reward among them)

so that log P = log π0 + log φ is the unnormalised target and log w = log P − log q the importance weight
(see `bayeslm.weights`). Sequence-level tensors are [N] float64; `token_log_probs` (the proposal's per-token
log-probabilities, [N, L] float32, 0 past each continuation) is kept when training needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from bayeslm.weights import NoSupport

Statistics = dict[str, torch.Tensor]


@dataclass
class ScoredSamples:
    prompts: list[str]
    prompt_index: torch.Tensor
    continuations: list[list[int]]
    texts: list[str]
    log_proposal: torch.Tensor
    log_prior: torch.Tensor
    log_phi: torch.Tensor
    stats: Statistics
    reward_name: str
    token_log_probs: torch.Tensor | None = None
    kl_prior: torch.Tensor | None = None  # Σ_t KL(q(·|x<t) ‖ π0(·|x<t)) per sample, where computed
    proposal: str = "proposal"  # the name of the distribution sampled

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def log_target(self) -> torch.Tensor:
        """Unnormalised log π*(x|c) = log π0(x|c) + log φ(x,c)."""
        return self.log_prior + self.log_phi

    @property
    def log_w(self) -> torch.Tensor:
        """log w = log P − log q, −inf where the target has no mass."""
        return self.log_target - self.log_proposal

    @property
    def reward(self) -> torch.Tensor:
        """The statistic reported as the reward (the target's first)."""
        return self.stats[self.reward_name]

    @property
    def sample_prompts(self) -> list[str]:
        """The prompt of each row."""
        return [self.prompts[i] for i in self.prompt_index.tolist()]

    @property
    def group(self) -> int:
        """Rows per prompt, for rows grouped by prompt with the same number of each (a slice of whole groups may
        leave some prompts out)."""
        return int((self.prompt_index == self.prompt_index[0]).sum())

    @property
    def mask(self) -> torch.Tensor:
        """[N, L]: True on each continuation's tokens (needs `token_log_probs`' width)."""
        lengths = torch.tensor([len(c) for c in self.continuations], device=self.token_log_probs.device)
        return torch.arange(self.token_log_probs.shape[1], device=lengths.device)[None, :] < lengths[:, None]

    def counts(self) -> torch.Tensor:
        """Number of rows of each prompt, [C]."""
        return torch.bincount(self.prompt_index.cpu(), minlength=len(self.prompts))

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """values [N] as [C, n], for rows grouped by prompt, n of each."""
        return values.reshape(len(self.prompts), -1)

    def unsupported(self) -> list[str]:
        """The prompts of which no sample has positive target weight."""
        alive = torch.zeros(len(self.prompts), dtype=torch.bool)
        alive[self.prompt_index[torch.isfinite(self.log_w)].cpu()] = True
        return [self.prompts[c] for c in (~alive).nonzero().flatten().tolist()]

    def require_support(self, whose: str | None, remedy: str):
        """The one rule of every sampler, reference and scorecard: where no sample of some prompt has positive
        target weight there is nothing to weigh, resample or estimate from, so stop with `NoSupport` (saying whose
        samples, and `remedy`) rather than return figures or samples that are not the target's."""
        bad = self.unsupported()
        if not bad:
            return
        per_prompt = self.counts()
        counts = {int(per_prompt[self.prompts.index(prompt)]) for prompt in bad}
        what = ("no sample was kept" if counts == {0} else
                f"all {counts.pop()} samples have zero target weight" if len(counts) == 1 else
                "every sample has zero target weight")
        raise NoSupport(f"{whose + ': ' if whose else ''}{what} for prompt(s) {bad} (no sample satisfies the "
                        f"constraints of the target). {remedy}", bad)

    def texts_by_prompt(self) -> list[list[str]]:
        return [[self.texts[i] for i in (self.prompt_index == c).nonzero().flatten().tolist()]
                for c in range(len(self.prompts))]

    def take(self, index: torch.Tensor) -> ScoredSamples:
        """The rows `index` (with repeats, in that order)."""
        rows = index.tolist()
        return replace(self, prompt_index=self.prompt_index[index], continuations=[self.continuations[i] for i in rows],
                       texts=[self.texts[i] for i in rows], **self._tensors(lambda x: x[index.to(x.device)]))

    def rows(self, start: int, stop: int) -> ScoredSamples:
        """Rows [start, stop): whole prompt groups when both are multiples of `group`. Token columns end at the
        rows' longest continuation, as a model's scores of those rows do."""
        part = self.take(torch.arange(start, min(stop, len(self))))
        if part.token_log_probs is not None:
            width = max((len(c) for c in part.continuations), default=0)
            part.token_log_probs = part.token_log_probs[:, :width]
        return part

    def sorted_by_prompt(self) -> ScoredSamples:
        """The rows grouped by prompt (stably), as `grid` needs."""
        return self.take(torch.sort(self.prompt_index.cpu(), stable=True).indices)

    def to(self, device) -> ScoredSamples:
        """A copy with every tensor on `device` (the training loop combines them with the model's outputs)."""
        return replace(self, prompt_index=self.prompt_index, **self._tensors(lambda x: x.to(device)))

    def _tensors(self, f) -> dict:
        changed = {k: f(getattr(self, k)) for k in ("log_proposal", "log_prior", "log_phi")}
        changed["stats"] = {k: f(v) for k, v in self.stats.items()}
        for k in ("token_log_probs", "kl_prior"):
            changed[k] = None if getattr(self, k) is None else f(getattr(self, k))
        return changed

    @staticmethod
    def cat(parts: Sequence[ScoredSamples]) -> ScoredSamples:
        """The rows of several containers of the same prompts, one after another."""
        first = parts[0]
        if any(p.prompts != first.prompts for p in parts):
            raise ValueError("only samples of the same prompts can be joined")

        def joined(key):
            values = [getattr(p, key) for p in parts]
            return None if any(v is None for v in values) else torch.cat(values)

        tokens = None
        if all(p.token_log_probs is not None for p in parts):
            width = max(p.token_log_probs.shape[1] for p in parts)
            tokens = torch.cat([torch.nn.functional.pad(p.token_log_probs, (0, width - p.token_log_probs.shape[1]))
                                for p in parts])
        return replace(first, prompt_index=torch.cat([p.prompt_index for p in parts]),
                       continuations=[c for p in parts for c in p.continuations],
                       texts=[t for p in parts for t in p.texts],
                       log_proposal=joined("log_proposal"), log_prior=joined("log_prior"), log_phi=joined("log_phi"),
                       kl_prior=joined("kl_prior"),
                       stats={k: torch.cat([p.stats[k] for p in parts]) for k in first.stats},
                       token_log_probs=tokens)
