"""Watching a run leave π* behind: its ELBO falling while it trains.

ELBO(q) = log Z − KL(q‖π*), and log Z is the target's, so the ELBO of the batches a run draws rises as the model
comes closer to π* (in reverse KL) and falls as it moves away, whatever the objective. A run whose ELBO over its
last `WINDOW` steps lies below that of its first `WINDOW` by more than `SIGNIFICANT` standard errors of the
difference (each window's spread between steps) is moving away from the target: a learning rate too high, or an
objective whose proposal has stopped seeing the target. It is said once, while training, and recorded.
"""

from __future__ import annotations

import math
import statistics

WINDOW = 5  # steps in each window
SIGNIFICANT = 3.0  # standard errors


class Drift:
    """Observes each step's figures; `observe` returns the warning the first time the ELBO has fallen."""

    def __init__(self):
        self.elbos: list[float] = []
        self.warned = False

    def observe(self, record: dict) -> str | None:
        elbo = record.get("elbo")
        if elbo is None or not math.isfinite(elbo):
            return None
        self.elbos.append(elbo)
        if self.warned or len(self.elbos) < 2 * WINDOW:
            return None
        first, last = self.elbos[:WINDOW], self.elbos[-WINDOW:]
        fall = statistics.fmean(first) - statistics.fmean(last)
        stderr = math.sqrt((statistics.variance(first) + statistics.variance(last)) / WINDOW)
        if fall <= SIGNIFICANT * stderr:
            return None
        self.warned = True
        return (f"step {record['step']}: the model is moving away from the target: the ELBO of its batches fell "
                f"from {statistics.fmean(first):.2f} (first {WINDOW} steps) to {statistics.fmean(last):.2f} (last "
                f"{WINDOW}), {fall / stderr:.1f} standard errors, so KL(q‖π*) grew by about {fall:.2f} nats. Lower the "
                "learning rate, or train with more samples a step")

    def state_dict(self) -> dict:
        return {"elbos": list(self.elbos), "warned": self.warned}

    def load_state_dict(self, state: dict):
        self.elbos, self.warned = list(state["elbos"]), state["warned"]
