"""KL-RL's first steps on SmolLM2 at two LoRA ranks: how far each update moves the model from the prior, and
whether its batch ELBO (E[r]/β − KL(q‖π0), exact per-token KL) rises. The demo's target (two prompts, VADER,
β = 0.16), 2 × 16 samples of 16 tokens a step, Adam at a constant lr 2e-3, seed 1 (not the demo's own).

    .venv/bin/python bench/klrl_rank.py --ranks 8,1 --steps 12 > bench/results/klrl_rank.txt

Prints, per rank, each step's batch reward, KL(q‖π0) and ELBO, and the ELBO's mean over each quarter of the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import print_machine

from bayeslm.config import load
from bayeslm.experiments.demo import PROMPTS
from bayeslm.training.config import TrainConfig
from bayeslm.training.run import train

BETA = 0.16


def trace(rank: int, args) -> list[tuple]:
    target = {"prior": "default", "prompts": PROMPTS, "max_new_tokens": 16,
              "potentials": [{"exponential": {"reward": "sentiment", "beta": BETA}}]}
    config = load(TrainConfig, {"target": target, "objective": "klrl", "steps": args.steps, "prompts_per_step": 2,
                                "samples_per_prompt": 16, "lr": args.lr, "schedule": "constant",
                                "lora": {"r": rank, "alpha": 2 * rank}, "eval_n": 0, "checkpoint_every": 10**6,
                                "batch_size": 32, "seed": args.seed})
    with tempfile.TemporaryDirectory() as tmp:
        train(config, Path(tmp) / "run", resume=False, overwrite=False, quiet=True)
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["reward_mean"], r["kl_model_prior"], r["reward_mean"] / BETA - r["kl_model_prior"])
            for r in rows if "reward_mean" in r]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="8,1")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print_machine()
    for rank in map(int, args.ranks.split(",")):
        started = time.perf_counter()
        rows = trace(rank, args)
        print(f"\nLoRA rank {rank} (alpha {2 * rank}), lr {args.lr:g}, seed {args.seed}: "
              f"{time.perf_counter() - started:.0f} s\n{'step':>4s} {'reward':>7s} {'KL(q‖π0)':>9s} {'ELBO':>6s}")
        for step, reward, kl, elbo in rows:
            print(f"{step:4d} {reward:7.3f} {kl:9.3f} {elbo:6.2f}")
        k = len(rows) // 4
        quarters = [statistics.fmean(r[3] for r in rows[i * k:(i + 1) * k]) for i in range(4)]
        print("batch ELBO by quarter: " + ", ".join(f"{q:.2f}" for q in quarters))


if __name__ == "__main__":
    main()
