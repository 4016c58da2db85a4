"""Before and after: which way each scorecard figure moved from the prior to the trained model, and whether the
move is more than noise.

A change is judged only where the figure has a direction towards the target (the KLs and TV to π* fall, the
ELBO = log Z − KL(q‖π*) and the reward rise) and exceeds two standard errors of the difference of two
independent estimates, 2·√(se_before² + se_after²). A figure marked unreliable on either side is not judged.

Two scorecards measured against one reference share its log Z, so the change of KL(q‖π*) = log Z_ref − ELBO_q is
exactly minus the change of the ELBO, plain means under each model: it is judged as that, whatever the
reference's own error (which the two KLs share, and which cancels).
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


def card_change(key: str, before: dict, after: dict) -> tuple[float | None, str]:
    """`change` of figure `key` between two scorecards (their JSON); for KL(q‖π*) against one shared reference,
    the ELBO's change judges it."""
    if key == "kl_model_target" and shared_reference(before, after):
        delta, verdict = change("elbo", before.get("elbo"), after.get("elbo"))
        return (None if delta is None else -delta), verdict
    return change(key, before.get(key), after.get(key))


def shared_reference(before: dict, after: dict) -> bool:
    """Whether two scorecards were measured against one reference (the same log Z, to the last digit)."""
    a, b = before.get("reference"), after.get("reference")
    return bool(a and b) and a.get("log_z_per_prompt") == b.get("log_z_per_prompt")


def summary(before: dict, after: dict) -> str:
    """One sentence on whether training brought the model closer to the target, in both KLs, with the change of
    each."""
    verdicts = {key: card_change(key, before, after) for key in ("kl_model_target", "kl_target_model")}
    moves = "; ".join(f"{label} {delta:+.3f} nats ({verdict or 'no verdict'})"
                      for (key, label) in (("kl_model_target", "KL(q‖π*)"), ("kl_target_model", "KL(π*‖q)"))
                      for delta, verdict in [verdicts[key]] if delta is not None)
    said = {verdict for _, verdict in verdicts.values()}
    reverse, forward = verdicts["kl_model_target"][1], verdicts["kl_target_model"][1]
    if reverse == "better" and forward == "WORSE":
        sentence = ("The trained model is closer to the target in KL(q‖π*), what KL-RL minimises, and further in "
                    "KL(π*‖q): it moved towards π* and covers less of it (the reverse KL seeks a mode)")
    elif reverse == "WORSE" and forward == "better":
        sentence = ("The trained model is closer to the target in KL(π*‖q), what DPG minimises, and further in "
                    "KL(q‖π*): it covers more of π* and puts mass where π* has little")
    elif "WORSE" in said:
        sentence = "The trained model is further from the target than the prior in at least one KL"
    elif said == {"better"}:
        sentence = "The trained model is closer to the target than the prior in both KLs"
    elif "better" in said:
        closer = "KL(q‖π*)" if verdicts["kl_model_target"][1] == "better" else "KL(π*‖q)"
        sentence = f"The trained model is closer to the target than the prior in {closer}; the other KL did not move "
        sentence += "beyond noise" if "within noise" in said else "measurably (its estimates are unreliable)"
    elif "unreliable" in said:
        sentence = "Whether the trained model is closer to the target cannot be told: the KL estimates are unreliable"
    else:
        sentence = "Training did not move the model measurably towards the target (both KLs within noise)"
    return f"{sentence}{': ' + moves if moves else ''}."


def _parts(figure) -> tuple[float | None, float | None, bool]:
    if isinstance(figure, dict):
        value = figure.get("value")
        return value, figure.get("stderr"), bool(figure.get("unreliable"))
    return figure, None, False
