"""Parallelism: data-parallel training over processes (distributed.py) and sharded weights (sharding.py)."""
