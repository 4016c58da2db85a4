"""Inference by training: fit a model π_θ to the target by minimising a divergence.

    objectives/   what is minimised, one module each behind one protocol (rl, klrl, dpg, fdpg, tb)
    proposal.py   where an objective's samples come from (the model, the prior, GDC's adaptive proposal)
    stepper.py    one optimiser step;   loop.py  the Trainer: a run of steps, its figures, checkpoints, Run
    run.py        a run from start to end (train: directory, signals, resume)
    config.py     the training config;     setup.py  the model, precision and schedule before step one
    checkpoint.py, state.py, run_dir.py   checkpoint files, what a run resumes from, the run directory
    drift.py      says when a run leaves π* behind;   trackers.py  metrics.jsonl, tensorboard, wandb, callbacks
    model_card.py the README of a saved model;        heap.py  memory between backward slices
"""
