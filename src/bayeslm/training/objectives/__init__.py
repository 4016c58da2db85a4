"""What the one training loop minimises. Each objective is one module citing the equation it implements:

    rl     pure reward maximisation, REINFORCE                     (collapses: the β → 0 limit)
    klrl   KL-regularised RL = reverse KL(π_θ‖π*), i.e. −β·ELBO     (variational inference)
    dpg    forward KL(π*‖π_θ) by importance-weighted likelihood     (distributional policy gradient)
    fdpg   any f-divergence D_f(π_θ‖π*) through its f′ pseudo-reward
    tb     trajectory balance, with a learned log Z per prompt       (fits from any proposal's samples)

Each is a dataclass of its options registered in `OBJECTIVES` (see `bayeslm.registry`); the protocol the loop
calls is `Objective` in `base.py`. Shared pieces: `policy_gradient.py` (the leave-one-out baseline, PPO's
surrogate) and `log_z.py` (the running estimate of log Z(c) per prompt).
"""

from bayeslm.training.objectives.base import OBJECTIVES, Objective, Step

__all__ = ["OBJECTIVES", "Objective", "Step"]
