"""Watching a run leave π* behind: its ELBO falling while it trains.

ELBO(q) = log Z − KL(q‖π*), and log Z is the target's, so the ELBO of the batches a run draws rises as the model
comes closer to π* (in reverse KL) and falls as it moves away, whatever the objective. A run whose ELBO over its
last `WINDOW` steps lies below that of its first `WINDOW` by more than `SIGNIFICANT` standard errors of the
difference is moving away from the target: a learning rate too high, or an objective whose proposal has stopped
seeing the target. It is said once, while training, and recorded.

The noise of one step's ELBO is read from the differences between successive steps (their median absolute value
is 0.954σ for normal noise): a trend, such as a collapse within the first window, barely moves it, where each
window's own spread would count the trend as noise.
"""

from __future__ import annotations

import math
import statistics

WINDOW = 5  # steps in each window
# Standard errors. The runs this is for fall far (pure RL to collapse on the toy: hundreds); a noisy run on SmolLM2
# whose ELBO dipped and recovered under a decaying learning rate reached about 3, and the test runs at every step,
# so the bar is high.
SIGNIFICANT = 5.0


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
        noise = statistics.median(abs(b - a) for a, b in zip(self.elbos, self.elbos[1:])) / 0.954
        stderr = noise * math.sqrt(2 / WINDOW)
        if fall <= SIGNIFICANT * stderr:
            return None
        self.warned = True
        return (f"step {record['step']}: the model is moving away from the target: the ELBO of its batches fell "
                f"from {statistics.fmean(first):.2f} (first {WINDOW} steps) to {statistics.fmean(last):.2f} (last "
                f"{WINDOW}), {fall / stderr if stderr else math.inf:.1f} standard errors, so KL(q‖π*) grew by about "
                f"{fall:.2f} nats. Lower the learning rate, or train with more samples a step")

    def state_dict(self) -> dict:
        return {"elbos": list(self.elbos), "warned": self.warned}

    def load_state_dict(self, state: dict):
        self.elbos, self.warned = list(state["elbos"]), state["warned"]
