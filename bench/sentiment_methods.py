"""Pure RL, KL-RL and DPG on the embedded SmolLM2-135M prior, LoRA, positive sentiment: what each does to the
reward, the KL to the prior and the diversity, for the same budget of samples.

    .venv/bin/python bench/sentiment_methods.py [--steps 40] [--max-new-tokens 32] [--eval-n 32]

Runs examples/train_{rl,klrl,dpg}_sentiment.yaml (same prompts, batch and learning rate) and prints, per method,
the scorecard before (the prior) and after: reward mean, KL(π‖π0) and distinct-2, each from eval-n samples per
prompt. Figures are recorded in docs/performance.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from bayeslm.config import load
from bayeslm.measurement.scorecard import scorecard
from bayeslm.modelling.target_file import parse_target
from bayeslm.training.config import TrainConfig
from bayeslm.training.run import train

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
METHODS = ("rl", "klrl", "dpg")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--eval-n", type=int, default=32)
    parser.add_argument("--out", default="runs/bench-sentiment")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of rl,klrl,dpg")
    parser.add_argument("--lr", type=float, help="override the configs' learning rate")
    args = parser.parse_args()
    out = Path(args.out)
    rows = {}
    target_data = {**yaml.safe_load((EXAMPLES / "positive_sentiment.yaml").read_text()),
                   "max_new_tokens": args.max_new_tokens}
    target = parse_target(target_data, EXAMPLES, batch_size=16)
    before = scorecard(target.prior, target, n=args.eval_n, seed=1).to_json()
    rows["prior"] = before
    for method in args.methods.split(","):
        data = yaml.safe_load((EXAMPLES / f"train_{method}_sentiment.yaml").read_text())
        if args.lr is not None:
            data["lr"] = args.lr
        config = load(TrainConfig, {**data, "target": target_data, "steps": args.steps, "eval_n": args.eval_n})
        started = time.perf_counter()
        rows[method] = train(config, out / method, base=EXAMPLES, overwrite=True, quiet=True).scorecard.to_json()
        rows[method]["minutes"] = (time.perf_counter() - started) / 60
    print(f"{'model':8s} {'reward (VADER)':>18s} {'KL(π‖π0)':>16s} {'KL(π‖π*)':>16s} {'KL(π*‖π)':>16s} "
          f"{'distinct-2':>10s} {'minutes':>8s}")
    for name, card in rows.items():
        def cell(key):
            e = card[key]
            return f"{e['value']:.3f} ± {e['stderr']:.3f}" if e["value"] is not None else "inf"
        print(f"{name:8s} {cell('reward_mean'):>18s} {cell('kl_model_prior'):>16s} {cell('kl_model_target'):>16s} "
              f"{cell('kl_target_model'):>16s} {card['distinct_2']:10.3f} {card.get('minutes', 0):8.1f}")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
