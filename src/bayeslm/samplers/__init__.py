"""Inference without training: samplers of a target π* ∝ π0·φ from any proposal q (the prior by default).

Each sampler is one module and takes a `Target`, a proposal `LM` and n samples per prompt; each returns
`Draws`: the samples scored against the target, and the figures that say how good they are.

    ancestral, importance, sir    importance.py   weigh the proposal's samples, or resample them
    rejection                     rejection.py    exact, given a bound M ≥ P/q
    filter                        filter.py       keep what satisfies the constraints (GUARD), KL(g‖g′) measured
    qrs, quasi_rejection, tradeoff  qrs.py        quasi-rejection: a guessed bound, its cost measured first
    imh                           imh.py          independent Metropolis–Hastings chains
    mh                            mh.py           Metropolis–Hastings chains that regenerate endings
    smc                           smc.py          sequential Monte Carlo over tokens, steered by prefix potentials
    best_of_n                     best_of_n.py    the reranking baseline

Every sampler is registered in `SAMPLERS` under its name from its function, its keyword arguments its options
(`base.sampler`). What they share: `pool.py` (proposals drawn and scored, the seeded generators) and `result.py`
(`Draws`).
"""

from bayeslm.samplers.base import SAMPLERS, Sampler
from bayeslm.samplers.best_of_n import best_of_n
from bayeslm.samplers.filter import filtered
from bayeslm.samplers.imh import imh
from bayeslm.samplers.importance import ancestral, importance, sir
from bayeslm.samplers.mh import mh
from bayeslm.samplers.pool import propose
from bayeslm.samplers.qrs import Tradeoff, qrs, quasi_rejection, tradeoff
from bayeslm.samplers.rejection import NoBound, known_log_bound, rejection
from bayeslm.samplers.result import Draws
from bayeslm.samplers.smc import smc

__all__ = ["SAMPLERS", "Draws", "NoBound", "Sampler", "Tradeoff", "ancestral", "best_of_n", "filtered", "imh",
           "importance", "known_log_bound", "mh", "propose", "qrs", "quasi_rejection", "rejection", "sir", "smc",
           "tradeoff"]
