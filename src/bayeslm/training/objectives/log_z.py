"""Running importance-sampling estimates of log Z(c), one per prompt c, over every batch seen, in log space.

Each prompt has its own normaliser Z(c) = Σ_x π0(x|c)·φ(x,c); pooling them would weight each prompt's
gradient by Z(c)/Z̄ and ignore the prompts where the target is rare.
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import torch

from bayeslm.modelling.scored import ScoredSamples
from bayeslm.training.objectives.base import Objective


class NoTargetMass(ValueError):
    """No sample of some prompt has had non-zero target weight in `GIVE_UP` samples."""


# Samples of a prompt, none of them with non-zero target weight, after which training stops: the proposal then meets
# the target less than 3/256 ≈ 1.2% of the time (the rule of three, at 95% confidence) and learns nothing from it.
GIVE_UP = 256


class RunningLogZ:
    def __init__(self):
        self.log_sum: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self.warned = False

    def update(self, log_weights: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Adds log(P(x|c)/q(x|c)) of new samples; returns each row's pooled estimate log Ẑ(c) [B] (float64).

        A rare constraint may go unmet by a first batch: until some sample of a prompt has non-zero weight, its
        log Ẑ is returned as +inf (the objectives give its rows no weight at all: they carry no signal about the
        target yet); after `GIVE_UP` such samples training stops with `NoTargetMass`."""
        log_weights = log_weights.double()
        for prompt in dict.fromkeys(prompts):
            rows = torch.tensor([p == prompt for p in prompts])
            batch = torch.logsumexp(log_weights[rows], 0).item()
            self.log_sum[prompt] = float(torch.logaddexp(torch.tensor(self.log_sum.get(prompt, -math.inf)),
                                                         torch.tensor(batch)))
            self.count[prompt] = self.count.get(prompt, 0) + int(rows.sum())
        values = torch.tensor([self.value(p) for p in prompts], dtype=torch.float64)
        empty = sorted({p for p, v in zip(prompts, values.tolist()) if v == -math.inf})
        hopeless = [p for p in empty if self.count[p] >= GIVE_UP]
        if hopeless:
            raise NoTargetMass(f"none of {min(self.count[p] for p in hopeless)} samples so far has non-zero target "
                               f"weight for prompt(s) {hopeless}: the proposal (almost) never satisfies the target's "
                               "constraints there. Use a proposal closer to the target, or a target that is met more "
                               "often")
        if empty and not self.warned:
            self.warned = True
            print(f"bayeslm: warning: no sample yet satisfies the target for prompt(s) {empty}: their samples give "
                  f"no target signal until one does (training stops after {GIVE_UP} without one)", file=sys.stderr)
        return values.masked_fill(torch.isneginf(values), math.inf).to(log_weights.device)

    def value(self, prompt: str) -> float:
        return self.log_sum[prompt] - math.log(self.count[prompt])

    @property
    def mean(self) -> float:
        """The mean of log Ẑ(c) over the prompts seen with some target mass (what the metrics report)."""
        values = [v for v in map(self.value, self.log_sum) if v > -math.inf]
        return sum(values) / len(values) if values else float("nan")

    def state_dict(self) -> dict:
        return {"log_sum": dict(self.log_sum), "count": dict(self.count)}

    def load_state_dict(self, state: dict):
        self.log_sum, self.count = dict(state["log_sum"]), dict(state["count"])


class LogZObjective(Objective):
    """An objective that weighs samples by π*(x|c)/q(x|c) = P/(Z(c)·q) with a `RunningLogZ` (dpg, fdpg): the
    running estimate sees every piece of the global batch, is logged, and is checkpointed."""

    def bind(self, target):
        self.running_log_z = RunningLogZ()

    def observe(self, batch: ScoredSamples):
        self.running_log_z.update(batch.log_w, batch.sample_prompts)

    def after_step(self, figures: dict) -> dict:
        return {"log_z_running": self.running_log_z.mean}

    def state_dict(self):
        return {"log_z": self.running_log_z.state_dict()}

    def load_state_dict(self, state):
        self.running_log_z.load_state_dict(state["log_z"])
