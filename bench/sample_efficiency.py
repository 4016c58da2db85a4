"""Issue 6, item 5: samples needed to reach an exact KL(π_θ‖π*) < 0.05 nats on the enumerable toy of `bayeslm
reproduce`, for KL-RL with bayeslm's estimator against the same algorithm with TRL's, and for DPG with and
without the KL-adaptive proposal.

    .venv/bin/python bench/sample_efficiency.py [--seeds 5] [--max-steps 300] [--threshold 0.05]

The toy: `bayeslm reproduce`'s prior (a small transformer trained for 200 steps, 57 continuations of at most 2
tokens), target π* ∝ π0·exp(r/0.5) with r = #"good" − #"bad". Every method starts from the prior and takes
steps of 32 samples of one prompt, AdamW at a constant lr 3e-3, no gradient clipping; after every step both
KLs to π* are computed exactly by enumeration. Methods:
  klrl-analytic  bayeslm's default: the per-token KL to the prior summed over the vocabulary (exact per step)
  klrl-k1        the same KL-RL with TRL's choice: the sampled log-ratio log π_θ/π0 as a penalty in the reward
  dpg-adaptive   DPG (GDC++ baseline) drawing from a proposal replaced by π_θ when it is estimated closer to π*
  dpg-prior      DPG drawing from the prior throughout
Reported per method: the samples (steps × 32) until KL(π_θ‖π*) first falls below the threshold, and until
KL(π*‖π_θ) does, median and range over seeds (">N" when a seed never got there within --max-steps).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (puts src/ on the path)

BATCH = 32
METHODS = {
    "klrl-analytic": {"objective": {"klrl": {"kl": "analytic"}}},
    "klrl-k1": {"objective": {"klrl": {"kl": "k1"}}},
    "dpg-adaptive": {"objective": {"dpg": {"proposal": "adaptive"}}},
    "dpg-prior": {"objective": {"dpg": {"proposal": "prior"}}},
}


def run(method: str, seed: int, args) -> dict:
    import bayeslm as bl
    from bayeslm.experiments.reproduce import BETA, _target, goodness
    from bayeslm.measurement.exact import Exact

    target = _target(200, goodness, BETA, max_new_tokens=2)
    exact = Exact(target)
    trainer = bl.Trainer(target, steps=args.max_steps, prompts_per_step=1, samples_per_prompt=BATCH, lr=args.lr,
                         max_grad_norm=None, eval_n=0, schedule="constant", seed=seed, quiet=True, **METHODS[method])
    reverse = forward = None
    curve = []
    for step in range(1, args.max_steps + 1):
        trainer.step()
        card = exact.scorecard(trainer.model)
        curve.append((card["kl_model_target"], card["kl_target_model"]))
        if reverse is None and card["kl_model_target"] < args.threshold:
            reverse = step * BATCH
        if forward is None and card["kl_target_model"] < args.threshold:
            forward = step * BATCH
        if reverse is not None and forward is not None:
            break
    return {"reverse": reverse, "forward": forward, "final": curve[-1], "steps": len(curve)}


def summary(values: list, cap: int) -> str:
    reached = [v for v in values if v is not None]
    if not reached:
        return f">{cap}"
    text = f"{statistics.median([v if v is not None else float('inf') for v in values]):.0f}"
    text += f" [{min(reached)}, {max(reached) if len(reached) == len(values) else f'>{cap}'}]"
    return text + ("" if len(reached) == len(values) else f" ({len(reached)}/{len(values)} seeds)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    cap = args.max_steps * BATCH
    results = {}
    print(f"# toy of `bayeslm reproduce`, {BATCH} samples per step, lr {args.lr}, {args.seeds} seeds, "
          f"at most {args.max_steps} steps; samples until exact KL < {args.threshold} nats: median [min, max]")
    print(f"{'method':14s} {'KL(π_θ‖π*)':>28s} {'KL(π*‖π_θ)':>28s} {'seconds':>8s}")
    for method in args.methods.split(","):
        started = time.perf_counter()
        runs = [run(method, seed, args) for seed in range(args.seeds)]
        results[method] = runs
        print(f"{method:14s} {summary([r['reverse'] for r in runs], cap):>28s} "
              f"{summary([r['forward'] for r in runs], cap):>28s} {time.perf_counter() - started:8.1f}", flush=True)
    med = {m: statistics.median([r["reverse"] if r["reverse"] is not None else float("inf") for r in rs])
           for m, rs in results.items()}
    if "klrl-analytic" in med and "klrl-k1" in med:
        print(f"\nKL-RL: k1 (TRL's estimator) needs {med['klrl-k1'] / med['klrl-analytic']:.2f}× the samples of the "
              "analytic KL to reach the threshold (medians)")
    if "dpg-adaptive" in med and "dpg-prior" in med:
        print(f"DPG: the prior as proposal needs {med['dpg-prior'] / med['dpg-adaptive']:.2f}× the samples of the "
              "adaptive proposal (medians, reverse KL)")
    common.emit_json(args.json, {"config": vars(args), "results": results})


if __name__ == "__main__":
    main()
