"""Modelling: what the user wants, stated apart from how to get it.

    rewards/      batched scalar functions of texts, one module each
    potentials/   evidence φ ≥ 0, one module per kind (exponential, constraint, moments, forbid, ...)
    target.py     the potential protocol, products of potentials and the target π* = π0·φ/Z
    target_file.py  targets written in YAML;   scored.py  samples scored under a target (ScoredSamples)
"""
