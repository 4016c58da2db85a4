"""Modelling: what the user wants, stated apart from how to get it.

    rewards/      batched scalar functions of texts, one module each
    potentials/   evidence φ ≥ 0: the protocol, products and registry in base.py, then one module per kind
    target.py     the target π* = π0·φ/Z
    target_file.py  targets written in YAML;   scored.py  samples scored under a target (ScoredSamples)
    prompts.py    prompts from a list, a file or a task;   tasks.py  verifiable tasks that ship with bayeslm
"""
