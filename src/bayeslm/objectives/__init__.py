"""What the one training loop minimises. Each objective is one small module citing the equation it implements:

    rl     pure reward maximisation, REINFORCE                     (collapses: the β → 0 limit)
    klrl   KL-regularised RL = reverse KL(π_θ‖π*), i.e. −β·ELBO     (variational inference)
    dpg    forward KL(π*‖π_θ) by importance-weighted likelihood     (distributional policy gradient)
    fdpg   any f-divergence D_f(π_θ‖π*) through its f′ pseudo-reward

An objective takes a `Batch` of samples already scored under the target and returns a loss to minimise: a mean over
rows of terms that see no other prompt's rows (leave-one-out baselines and log Z are per prompt), so the training
loop may take a batch a few whole prompt groups at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bayeslm.lm import LM


@dataclass
class Batch:
    """Continuations drawn from a proposal (the model itself when on-policy) and scored under the target.

    Rows are grouped by prompt, `group` rows each. Sequence-level tensors are [B] float64; per-token ones
    [B, L] float32, 0 past each continuation's end (`mask`).
    """

    prompts: list[str]
    continuations: list[list[int]]
    texts: list[str]
    group: int
    proposal_token_log_probs: torch.Tensor
    mask: torch.Tensor
    log_prior: torch.Tensor
    log_phi: torch.Tensor
    reward: torch.Tensor

    @property
    def log_proposal(self) -> torch.Tensor:
        return self.proposal_token_log_probs.sum(-1).double()

    @property
    def log_target(self) -> torch.Tensor:
        return self.log_prior + self.log_phi

    def __len__(self) -> int:
        return len(self.continuations)

    def rows(self, start: int, stop: int) -> Batch:
        """Rows [start, stop): whole prompt groups when both are multiples of `group`. Token columns end at the
        rows' longest continuation, as the model's scores of those rows do."""
        cut = slice(start, stop)
        width = int(self.mask[cut].sum(1).max()) if stop > start else 0
        return Batch(self.prompts[cut], self.continuations[cut], self.texts[cut], self.group,
                     self.proposal_token_log_probs[cut, :width], self.mask[cut, :width], self.log_prior[cut],
                     self.log_phi[cut], self.reward[cut])


@dataclass
class Step:
    """What an objective returns: the loss, the model's log-probabilities of the batch (detached, [B]) and, when
    it computed them, the per-sample analytic KL(π_θ‖π0) and log π0 ([B], detached)."""

    loss: torch.Tensor
    log_model: torch.Tensor
    kl_prior: torch.Tensor | None = None
    log_prior: torch.Tensor | None = None


class Objective:
    name = "objective"
    needs_model_samples = True  # on-policy: the batch must come from the model being trained
    scores_prior = False  # its loss runs the prior on the batch and returns log π0 (Step.log_prior): the training
    # loop then leaves the batch's log_prior unscored (NaN) rather than run the prior twice

    def loss(self, model: LM, prior: LM, batch: Batch) -> Step:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Resumable state (running estimates); checkpointed with the model."""
        return {}

    def load_state_dict(self, state: dict):
        pass
