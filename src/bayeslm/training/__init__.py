"""Inference by training: fit a model π_θ to the target by minimising a divergence.

    objectives/   what is minimised, one module each behind one protocol (klrl, dpg, fdpg, rl)
    loop.py       the one training loop;   run.py  a run from start to end (train, Run)
    config.py     the training config;     setup.py  the model, precision and schedule before step one
    checkpoint.py, run_dir.py, heap.py     exact resume, the run directory, memory between backward slices
"""
