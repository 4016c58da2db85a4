"""The objective protocol: all the training loop knows of what it minimises.

An objective is a dataclass whose fields are its options (`KLRL(kl="k3")`, or `objective: {klrl: {kl: k3}}` in
YAML). The loop binds it to the target once, then at every step asks it for a loss on a batch of samples already
scored under the target (a `ScoredSamples` on the model's device, grouped by prompt), and afterwards lets it
update what it adapts. It never asks which objective it holds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch

from bayeslm.config import field, validate
from bayeslm.distributions.lm import LM
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.registry import Registry
from bayeslm.training.proposal import Proposal

OBJECTIVES = Registry("objective", "bayeslm.training.objectives",
                      lambda entry: isinstance(entry, type) and issubclass(entry, Objective))


@dataclass
class Step:
    """What a loss returns: the loss, the model's log-probabilities of the batch (detached, [B]) and, when it
    computed them, the per-sample analytic KL(π_θ‖π0) (exact per token) and log π0 ([B], detached)."""

    loss: torch.Tensor
    log_model: torch.Tensor
    kl_prior: torch.Tensor | None = None
    log_prior: torch.Tensor | None = None


@dataclass
class Objective:
    """Base of every objective. A loss is a mean over rows of terms that see no other prompt's rows (leave-one-out
    baselines and log Z are per prompt), so the loop may take a batch a few whole prompt groups at a time."""

    name: ClassVar[str] = "objective"
    # Its loss runs the prior on the batch and returns log π0 (Step.log_prior): the loop then leaves the batch's
    # log_prior unscored (NaN) rather than run the prior twice.
    scores_prior: ClassVar[bool] = False
    # Where samples come from: "model" (on-policy), "prior", or "adaptive" (`bayeslm.training.proposal`).
    proposal = "model"
    # Whether those samples come masked to the target's languages (locally constrained decoding, exact
    # log-probabilities kept): for objectives whose importance weights P/q correct the proposal.
    mask = False

    def __post_init__(self):
        validate(self)

    @property
    def epochs(self) -> int:
        """Passes (optimiser steps) over each batch."""
        return 1

    @property
    def sampling(self) -> Proposal:
        """The sampling policy this objective composes (its `proposal` option), with its state."""
        if "_sampling" not in self.__dict__:  # made on first use: a subclass's bind need not call the base's
            self.__dict__["_sampling"] = Proposal(self.proposal)
        return self.__dict__["_sampling"]

    def __deepcopy__(self, memo):
        """Its options and running state, not its sampling state: the adaptive proposal's copy of a model belongs
        to the run that made it (a run starts from a deep copy of the objective it is given)."""
        clone = copy.copy(self)
        clone.__dict__ = {k: copy.deepcopy(v, memo) for k, v in self.__dict__.items() if k != "_sampling"}
        return clone

    def sampler(self, model: LM, prior: LM) -> LM:
        """The LM this step's samples come from: the model, the prior, or the adaptive proposal's copy."""
        return self.sampling.sampler(model, prior)

    def bind(self, target: Target):
        """Called once before training (and before a resume loads the state): reads what it needs of the target
        and sets up its running state."""

    def parameter_groups(self) -> list[dict]:
        """Parameters of its own that training fits with the model's (e.g. a learned log Z), as AdamW parameter
        groups with their own options; called after `bind`."""
        return []

    def loss(self, model: LM, prior: LM, batch: ScoredSamples) -> Step:
        raise NotImplementedError

    def observe(self, batch: ScoredSamples):
        """A piece of the global batch whose loss another process computes (data-parallel training): update any
        running estimate exactly as `loss` would, so that every process holds the same state."""

    def after_step(self, figures: dict) -> dict:
        """After the optimiser step, given the step's figures (see `bayeslm.measurement.scorecard.batch_figures`):
        adapt what the objective adapts; returns figures of its own to log."""
        return {}

    def state_dict(self) -> dict:
        """Resumable state (running estimates); checkpointed with the model."""
        return {}

    def load_state_dict(self, state: dict):
        pass


def mask_option():
    """The `mask` option of the objectives that learn from samples of a proposal (dpg, fdpg)."""
    return field(False, doc="draw the proposal's samples masked to the target's regex, grammar and json_schema "
                            "languages (locally constrained decoding, its exact log-probabilities in the weights): "
                            "every sample is viable, so a rare format still gives signal")


def proposal_option():
    """The `proposal` option of the objectives that learn from samples of a proposal (dpg, fdpg)."""
    return field("adaptive", doc="where samples come from: the prior, the model itself, or adaptive: the prior, "
                                 "replaced by a copy of the model whenever the model is estimated closer to the "
                                 "target")
