"""End-to-end experiments built from the public pieces, their commands in `bayeslm.cli`:

    demo.py       the main job on the embedded prior: plan β, train, score against π*, report
    guard.py      guaranteed generation: a trained proposal filtered by the constraints (GUARD)
    reproduce.py  the KL-RL-as-inference claims on exact toy numbers
"""
