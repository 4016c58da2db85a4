"""A running importance-sampling estimate of log Z over every batch seen, kept in log space."""

from __future__ import annotations

import math

import torch


class RunningLogZ:
    def __init__(self):
        self.log_sum, self.count = float("-inf"), 0

    def update(self, log_weights: torch.Tensor) -> float:
        """Adds log(P(x)/q(x)) of new samples; returns the pooled estimate log mean(P/q)."""
        log_sum = torch.logsumexp(log_weights.double(), 0).item()
        self.log_sum = float(torch.logaddexp(torch.tensor(self.log_sum), torch.tensor(log_sum)))
        self.count += len(log_weights)
        return self.value

    @property
    def value(self) -> float:
        return self.log_sum - math.log(self.count) if self.count else float("nan")

    def state_dict(self) -> dict:
        return {"log_sum": self.log_sum, "count": self.count}

    def load_state_dict(self, state: dict):
        self.log_sum, self.count = state["log_sum"], state["count"]
