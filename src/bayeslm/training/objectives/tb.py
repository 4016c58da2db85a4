"""Trajectory balance with a learned log Z: GFlowNet fine-tuning (Malkin, Jain, Bengio, Sun & Bengio 2022; for
language models Hu, Jain, Elmoznino, Kaddar, Lajoie, Bengio & Malkin, ICLR 2024, "Amortizing intractable inference
in large language models").

    L(x, c) = (log Z_ψ(c) + log π_θ(x|c) − log π0(x|c) − log φ(x,c))²

minimised jointly over the model θ and one learned log Z_ψ(c) per prompt. A sequence is generated in one way only
(left to right), so trajectory balance is a residual of the target itself: L = 0 for every x exactly when
π_θ(x|c) = π0(x|c)·φ(x,c)/Z_ψ(c), that is when π_θ = π* and Z_ψ(c) = Z(c). That minimiser does not depend on
where the samples x come from, so trajectory balance trains from the model's own samples (on-policy) or from any
proposal's (off-policy: `proposal: prior`), which no on-policy objective can do; and the learned log Z_ψ(c) is an
estimate of log Z(c) that the scorecard can check.

Each log Z_ψ(c) starts at the importance-sampling estimate log mean(P/q) of the first batch that holds prompt c, so
that a model already at the target starts at L's minimum rather than at a residual of log Z(c).

A hard constraint gives log φ = −∞ and an infinite residual; log φ is therefore raised to `floor`, so that the
trained model keeps at most e^floor·π0 of the mass outside the constraint (−30 nats: none that matters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from bayeslm.config import field, positive
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.training.objectives.base import OBJECTIVES, Objective, Step
from bayeslm.weights import log_mean_exp


@OBJECTIVES.register
@dataclass
class TB(Objective):
    """Trajectory balance: a squared residual of the target per sample, with a learned log Z per prompt."""

    name: ClassVar[str] = "tb"

    proposal: Literal["model", "prior"] = field("model", doc="where samples come from: the model itself "
                                                           "(on-policy) or the prior (off-policy)")
    log_z_lr: float = field(0.1, doc="learning rate of the learned log Z (AdamW, no weight decay): the residual "
                                     "moves it by nats, the model's weights by far less", check=positive)
    floor: float = field(-30.0, doc="log φ below this is raised to it (a hard constraint's −inf would make the "
                                    "residual infinite)")

    def bind(self, target):
        self.index = {prompt: c for c, prompt in enumerate(target.prompts)}
        self.learned_log_z = torch.zeros(len(target.prompts), dtype=torch.float64, requires_grad=True)
        self.started = [False] * len(target.prompts)

    def parameter_groups(self) -> list[dict]:
        return [{"params": [self.learned_log_z], "lr": self.log_z_lr, "weight_decay": 0.0}]

    def loss(self, model, prior, batch: ScoredSamples) -> Step:
        self.observe(batch)
        log_model = model.log_prob(batch.sample_prompts, batch.continuations)
        rows = torch.tensor([self.index[p] for p in batch.sample_prompts])
        residual = self.learned_log_z[rows] + log_model.double().cpu() - self._log_target(batch)
        return Step(residual.square().mean(), log_model.detach().double())

    def observe(self, batch: ScoredSamples):
        """Starts the log Z of each prompt seen for the first time (every process sees the pieces of a step in the
        same order, so all start alike)."""
        log_w = self._log_target(batch) - batch.log_proposal.double().cpu()
        with torch.no_grad():
            for prompt in dict.fromkeys(batch.sample_prompts):
                c = self.index[prompt]
                if not self.started[c]:
                    rows = torch.tensor([p == prompt for p in batch.sample_prompts])
                    self.learned_log_z[c] = log_mean_exp(log_w[rows], 0)
                    self.started[c] = True

    def _log_target(self, batch: ScoredSamples) -> torch.Tensor:
        return batch.log_prior.double().cpu() + batch.log_phi.double().cpu().clamp(min=self.floor)

    def after_step(self, figures: dict) -> dict:
        return {"log_z_learned": self.learned_log_z.mean().item()}

    def state_dict(self) -> dict:
        return {"log_z": self.learned_log_z.detach().tolist(), "started": list(self.started)}

    def load_state_dict(self, state: dict):
        with torch.no_grad():
            self.learned_log_z.copy_(torch.tensor(state["log_z"], dtype=torch.float64))
        self.started = list(state["started"])
