"""Measurement: how far a model or a sampler is from the target, and how far each figure can be trusted.

    reference.py   one log Z and one set of π*'s samples per target: every scorecard's yardstick
    scorecard.py   every figure with a standard error;   exact.py  exact values by enumeration on toy priors
    compare.py     the change of each figure between two scorecards, judged against its standard error
    certify.py     certified bounds on log Z from exact samples;   guard.py  GUARD's figures
    plan.py        what KL-RL would converge to for each β;   evaluation.py  the before/after of a run
    pass_at_k.py   pass@k (Chen et al.'s unbiased estimator) and distinct correct answers
    report.py      a run's HTML report;   diversity.py  distinct-n and self-BLEU
"""
