"""Measurement: how far a model or a sampler is from the target, and how far each figure can be trusted.

    scorecard.py   every figure with a standard error;   exact.py  exact values by enumeration on toy priors
    plan.py        what KL-RL would converge to for each β;   evaluation.py  the before/after of a run
    report.py      a run's HTML report;   diversity.py  distinct-n and self-BLEU
"""
