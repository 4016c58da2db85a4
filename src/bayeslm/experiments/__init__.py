"""End-to-end experiments built from the public pieces: the demo (the main job on the embedded prior) and the
reproduction of the KL-RL-as-inference claims on exact toy numbers. Their commands are in `bayeslm.cli`."""
