"""Before and after: which way each scorecard figure moved from the prior to the trained model, and whether the
move is more than noise.

A change is judged only where the figure has a direction towards the target (the KLs and TV to π* fall, the
ELBO = log Z − KL(q‖π*) and the reward rise) and exceeds two standard errors of the difference of two
independent estimates, 2·√(se_before² + se_after²). A figure marked unreliable on either side is not judged.
"""

from __future__ import annotations

import math

# Which way each figure should move for q to come closer to π*: −1 down, +1 up, 0 no direction.
TOWARDS_TARGET = {"kl_model_target": -1, "kl_target_model": -1, "tv_model_target": -1, "elbo": 1,
                  "reward_mean": 1}


def change(key: str, before, after) -> tuple[float | None, str]:
    """The change of figure `key` from `before` to `after` (each a scorecard's JSON entry: {value, stderr,
    unreliable?} or a plain number) and its verdict: "better", "WORSE", "within noise", "unreliable", or ""
    where the figure has no direction or a side is unknown (infinite)."""
    (a, a_se, a_bad), (b, b_se, b_bad) = _parts(before), _parts(after)
    if a is None or b is None:
        return None, ""
    delta = b - a
    direction = TOWARDS_TARGET.get(key, 0)
    if not direction:
        return delta, ""
    if a_bad or b_bad:
        return delta, "unreliable"
    if abs(delta) <= 2 * math.hypot(a_se or 0.0, b_se or 0.0):
        return delta, "within noise"
    return delta, "better" if delta * direction > 0 else "WORSE"


def summary(before: dict, after: dict) -> str:
    """One sentence on whether training brought the model closer to the target, in both KLs."""
    verdicts = {key: change(key, before.get(key), after.get(key)) for key in ("kl_target_model", "kl_model_target")}
    said = {verdict for _, verdict in verdicts.values()}
    if "WORSE" in said:
        return "The trained model is further from the target than the prior in at least one KL."
    if said == {"better"}:
        return "The trained model is closer to the target than the prior in both KLs."
    if "better" in said:
        return "The trained model is closer to the target in one KL; the other did not move beyond noise."
    if "unreliable" in said:
        return "Whether the trained model is closer to the target cannot be told: the KL estimates are unreliable."
    return "Training did not move the model measurably towards the target (both KLs within noise)."


def _parts(figure) -> tuple[float | None, float | None, bool]:
    if isinstance(figure, dict):
        value = figure.get("value")
        return value, figure.get("stderr"), bool(figure.get("unreliable"))
    return figure, None, False
