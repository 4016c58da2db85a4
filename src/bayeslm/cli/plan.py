"""`bayeslm plan`: what KL-regularised RL would converge to for each β, before any training."""

from __future__ import annotations

import json
import sys

from bayeslm.cli.common import floats, models_from, positive_int, preflight_target, seed_int, subparser
from bayeslm.config import ConfigError

EXAMPLE = """example:
  bayeslm plan --target examples/toy_sentiment.yaml --betas 0.1,0.3,1,3
  bayeslm plan --target examples/positive_sentiment.yaml --kl-budget 2 --json"""


def add(sub, parents):
    parser = subparser(sub, "plan", parents, "predict what KL-regularised RL converges to for each beta, before "
                                             "training", EXAMPLE)
    parser.add_argument("--target", required=True, help="target file (YAML) with an exponential potential")
    parser.add_argument("--betas", default="0.01,0.03,0.1,0.3,1", help="comma-separated (default "
                                                                       "0.01,0.03,0.1,0.3,1)")
    parser.add_argument("--kl-budget", type=float, help="also solve for the beta with KL(π*‖π0) equal to this")
    parser.add_argument("--reward", type=float, help="also solve for the beta with E_π*[r] equal to this")
    parser.add_argument("-n", type=positive_int, default=1024, help="prior samples per prompt (default 1024)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run, preflight=preflight_target)
    return parser


def run(args) -> int:
    from bayeslm.measurement.plan import MIN_ESS, NoReward, Plan, plan_json
    from bayeslm.modelling.target_file import load_target

    betas = floats("--betas", args.betas)
    if any(not b > 0 for b in betas):
        raise ConfigError(f"--betas: every beta must be > 0, got {args.betas}")
    target = load_target(args.target, **models_from(args))
    try:
        planner = Plan(target, args.n, seed=args.seed)
    except NoReward as error:
        raise ConfigError(str(error)) from None
    predictions = [planner.at(beta) for beta in betas]
    solved = {}
    if args.kl_budget is not None:
        solved["kl_budget"] = ("KL budget", args.kl_budget, planner.at(planner.beta_for_kl(args.kl_budget)))
    if args.reward is not None:
        solved["reward_target"] = ("reward target", args.reward, planner.at(planner.beta_for_reward(args.reward)))
    for p in predictions + [s[2] for s in solved.values()]:
        if not p.trusted:
            print(f"bayeslm: warning: at beta={p.beta:.4g} some prompt has {p.min_ess:.1f} effective samples "
                  f"(at least {MIN_ESS:g} needed) and a Pareto k̂ of {p.pareto_k:.2f} (at most "
                  f"{p.pareto_k_threshold:.2f}): its figures are not to be trusted; draw more samples (-n) or plan "
                  "larger betas", file=sys.stderr)
    if args.json:
        print(json.dumps(plan_json(planner, betas, kl_budget=args.kl_budget, reward=args.reward), indent=2))
        return 0
    print(f"what KL-regularised RL converges to, from {args.n} prior samples per prompt (reward "
          f"{planner.reward_name})\n")
    print(f"{'':14s} {'beta':>9s} {'E_π*[r]':>18s} {'KL(π*‖π0)':>18s} {'log Z':>18s} {'ESS':>8s}")
    rows = [("", p) for p in predictions] + [(f"{label} {goal:g}", p) for label, goal, p in solved.values()]
    for label, p in rows:
        print(f"{label:14s} {p.beta:9.4g} " + " ".join(f"{e.value:9.4f} ± {e.stderr:6.4f}" for e in (
            p.target_reward_mean, p.kl_target_prior, p.log_z)) + f" {p.ess:8.1f}")
    return 0
