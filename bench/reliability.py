"""Issue 19: can each figure be trusted where it says so? Every check against exact values on the enumerable toy.

    .venv/bin/python bench/reliability.py [--reps 200] [--certify-reps 100] [--n 256] [--json FILE]

1. Far models: the seed-1 toy network of the issue and three more models far from the toy sentiment target,
   scored on n samples per prompt: every figure whose exact value lies outside its ±3 se must be marked.
2. Coverage: --reps scorecards at n samples per prompt of the prior and two tempered priors (T = 0.8, 1.25):
   how often each figure's unmarked ±2 se interval covers the exact value (nominal 0.95).
3. Certified bounds (`bl.certify`): --certify-reps repetitions on the toy sentiment (r_max = 1) and constraint
   targets, for the prior and the seed-1 network: ELBO − se ≤ log Z ≤ EUBO + se every time? the Jeffreys
   estimate within 3 se of its exact value?
4. SMC (`bl.samplers.smc`): --reps independent runs of 64 particles on three prefix targets: the coverage of
   log Ẑ ± 2 se, its bias (log Ẑ is biased low) and its spread against the standard errors.
5. Against the reference (`bl.reference`): --reference-reps repetitions, each a fresh reference of 1024 prior
   samples per prompt and n samples of each of five models near and far from the toy keyword target (the prior,
   pure RL run to collapse, KL-RL at a learning rate that overshoots, KL-RL converged, a network of another
   seed): how often each figure's unmarked ±2 se interval covers the exact value, beside the same figures from
   the model's own samples (what scorecards did before the reference).

    .venv/bin/python bench/reliability.py --parts reference --reference-reps 100
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (puts src/ on the path)
import torch  # noqa: E402

import bayeslm as bl  # noqa: E402
from bayeslm.measurement.exact import Exact  # noqa: E402
from bayeslm.measurement.scorecard import FIGURES, scorecard  # noqa: E402
from bayeslm.modelling.target_file import load_target  # noqa: E402

EXAMPLES = common.ROOT / "examples"
SCALAR = [key for key, _ in FIGURES]


def far_models(prior):
    return {"toy seed 1 (the issue's)": bl.load_lm({"toy": {"seed": 1, "train_steps": 200}}),
            "toy seed 2": bl.load_lm({"toy": {"seed": 2, "train_steps": 200}}),
            "toy seed 3, 30 steps": bl.load_lm({"toy": {"seed": 3, "train_steps": 30}}),
            "prior at T = 3": prior.warped(temperature=3.0)}


def marked_when_off(n: int) -> list[dict]:
    target = load_target(EXAMPLES / "toy_sentiment.yaml")
    exact = Exact(target)
    rows = []
    for name, model in far_models(target.prior).items():
        card = scorecard(model, target, n, seed=0)
        truth = exact.scorecard(model)
        off = [key for key in SCALAR if math.isfinite(truth[key])
               and abs(card[key].value - truth[key]) > 3 * card[key].stderr]
        unmarked = [key for key in off if not card[key].unreliable]
        rows.append({"model": name, "ess": card.ess, "pareto_k": card.pareto_k, "off_by_3se": off,
                     "off_and_unmarked": unmarked})
        print(f"  {name:28s} ESS {card.ess:6.1f}  k̂ {card.pareto_k:5.2f}  outside ±3 se: {len(off):2d} "
              f"({', '.join(off) or '-'}); of them unmarked: {unmarked or 'none'}")
    return rows


def coverage(n: int, reps: int) -> list[dict]:
    target = load_target(EXAMPLES / "toy_sentiment.yaml")
    exact = Exact(target)
    rows = []
    for name, model in {"prior": target.prior, "prior at T = 0.8": target.prior.warped(temperature=0.8),
                        "prior at T = 1.25": target.prior.warped(temperature=1.25)}.items():
        truth = exact.scorecard(model)
        covered = {key: 0 for key in SCALAR}
        unmarked = {key: 0 for key in SCALAR}
        for rep in range(reps):
            card = scorecard(model, target, n, seed=1000 + rep)
            for key in SCALAR:
                if not card[key].unreliable:
                    unmarked[key] += 1
                    covered[key] += abs(card[key].value - truth[key]) <= 2 * card[key].stderr
        row = {"model": name, "reps": reps,
               "coverage": {k: covered[k] / unmarked[k] if unmarked[k] else None for k in SCALAR},
               "unmarked": unmarked}
        rows.append(row)
        worst = min((v, k) for k, v in row["coverage"].items() if v is not None)
        print(f"  {name:18s} lowest coverage {worst[0]:.3f} ({worst[1]}); marked in "
              f"{reps - min(unmarked.values())} of {reps}")
        print("    " + "  ".join(f"{k} {v:.3f}" for k, v in row["coverage"].items() if v is not None))
    return rows


def certified(n: int, reps: int) -> list[dict]:
    rows = []
    for file, reward_max in (("toy_sentiment.yaml", 1.0), ("toy_constraint.yaml", None)):
        target = load_target(EXAMPLES / file)
        exact = Exact(target)
        for name, model in {"prior": target.prior,
                            "toy seed 1": bl.load_lm({"toy": {"seed": 1, "train_steps": 200}})}.items():
            truth = exact.scorecard(model)
            jeffreys = truth["kl_model_target"] + truth["kl_target_model"]
            held = tight = within = 0
            for rep in range(reps):
                cert = bl.certify(model, target, n, reward_max=reward_max, seed=2000 + rep)
                lower, upper, j = cert["elbo"], cert["eubo"], cert["jeffreys"]
                held += lower.value - lower.stderr <= truth["log_z"] <= upper.value + upper.stderr
                tight += (cert["log_z_lower"].value - 2 * cert["log_z_lower"].stderr <= truth["log_z"]
                          <= cert["log_z_upper"].value + 2 * cert["log_z_upper"].stderr)
                within += (j.value == jeffreys == math.inf) or abs(j.value - jeffreys) <= 3 * j.stderr
            rows.append({"target": file, "model": name, "reps": reps, "exact_log_z": truth["log_z"],
                         "exact_jeffreys": jeffreys, "bounds_held": held, "tight_bounds_held_2se": tight,
                         "jeffreys_within_3se": within})
            print(f"  {file:20s} {name:10s} ELBO ≤ log Z ≤ EUBO (±1 se) {held}/{reps}; tighter pair (±2 se) "
                  f"{tight}/{reps}; Jeffreys within 3 se {within}/{reps} (exact {jeffreys:.3f})")
    return rows


def smc_runs(runs: int) -> list[dict]:
    from bayeslm.modelling.potentials import Exponential, Forbid, StartsWith

    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 200}})
    closer = bl.load_lm({"toy": {"seed": 0, "train_steps": 100}})
    cases = {"forbid 'good'": (Forbid(["good"]), prior), "starts with 'very'": (StartsWith("very"), prior),
             "exp(sentiment/0.5) · forbid 'bad'": (Exponential(bl.rewards.sentiment(), beta=0.5) * Forbid(["bad"]),
                                                   closer)}
    rows = []
    for name, (potential, proposal) in cases.items():
        for threshold in (0.5, 1.0):
            target = (prior * potential).given(["the movie"] * runs, max_new_tokens=4)
            log_z = Exact(target.given(["the movie"])).log_z.item()
            draws = bl.samplers.smc(target, proposal, 64, ess_threshold=threshold, seed=3)
            estimates, stderr = draws.log_z_per_prompt, draws.log_z_stderr_per_prompt
            given = torch.isfinite(stderr)
            covered = ((estimates - log_z).abs() <= 2 * stderr)[given].double().mean().item()
            row = {"target": name, "ess_threshold": threshold, "runs": runs, "particles": 64, "exact_log_z": log_z,
                   "bias": estimates.mean().item() - log_z, "bias_stderr": estimates.std().item() / math.sqrt(runs),
                   "spread": estimates.std().item(), "rms_stderr": stderr[given].square().mean().sqrt().item(),
                   "marked": int((~given).sum()), "coverage_2se": covered,
                   "resampling_per_run": draws.figures["resampling_steps"] / runs}
            rows.append(row)
            print(f"  {name:34s} ess_threshold {threshold}: bias of log Ẑ {row['bias']:+.4f} ± "
                  f"{row['bias_stderr']:.4f}, spread {row['spread']:.4f}, rms se {row['rms_stderr']:.4f}, coverage "
                  f"{covered:.3f} of {int(given.sum())} unmarked ({row['marked']} marked), "
                  f"{row['resampling_per_run']:.2f} resamplings a run")
    return rows


REFERENCE_FIGURES = ("log_z", "eubo", "kl_model_target", "kl_target_model", "tv_model_target", "target_reward_mean")


def against_reference(n: int, reps: int) -> list[dict]:
    from bayeslm.modelling.target_file import parse_target

    target = parse_target({"prior": {"toy": {"seed": 0, "train_steps": 50}}, "prompts": ["", "the movie"],
                           "max_new_tokens": 3,
                           "potentials": [{"exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5}}]})

    def trained(objective, steps, lr):
        return bl.train(target, objective, steps=steps, lr=lr, samples_per_prompt=8, eval_n=0, quiet=True).model

    models = {"prior": target.prior, "pure RL, collapsed": trained(bl.RL(), 40, 3e-2),
              "KL-RL, overshooting": trained(bl.KLRL(), 40, 5e-2), "KL-RL, converged": trained(bl.KLRL(), 100, 3e-3),
              "another seed": bl.load_lm({"toy": {"seed": 3, "train_steps": 50}})}
    space = Exact(target)
    truth = {name: space.scorecard(model) for name, model in models.items()}
    tally = {(name, side): {key: [0, 0] for key in REFERENCE_FIGURES} for name in models
             for side in ("reference", "own samples")}
    for rep in range(reps):
        reference = bl.reference(target, 1024, seed=5000 + rep, source="prior")
        for name, model in models.items():
            for side, ref in (("reference", reference), ("own samples", None)):
                card = scorecard(model, target, n, seed=6000 + rep, reference=ref)
                for key in REFERENCE_FIGURES:
                    if not card[key].unreliable:
                        tally[name, side][key][0] += 1
                        tally[name, side][key][1] += abs(card[key].value - truth[name][key]) <= 2 * card[key].stderr
    rows = []
    for (name, side), counts in tally.items():
        row = {"model": name, "measured": side, "reps": reps,
               "coverage": {k: c / u if u else None for k, (u, c) in counts.items()},
               "unmarked": {k: u for k, (u, _) in counts.items()},
               "exact": {k: truth[name][k] for k in REFERENCE_FIGURES}}
        rows.append(row)
        print(f"  {name:20s} {side:12s} " + "  ".join(
            f"{k} {row['coverage'][k]:.2f} ({row['unmarked'][k]})" if row["coverage"][k] is not None
            else f"{k} – (0)" for k in REFERENCE_FIGURES))
    return rows


PARTS = ("far", "coverage", "certified", "smc", "reference")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--certify-reps", type=int, default=100)
    parser.add_argument("--reference-reps", type=int, default=100)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"a comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    parts = args.parts.split(",")
    torch.set_num_threads(1)
    print(json.dumps(common.machine()))
    started = time.perf_counter()
    results = {"settings": vars(args) | {"json": str(args.json)}}
    if "far" in parts:
        print("1. far models: figures off by more than 3 se, and whether they are marked")
        results["far_models"] = marked_when_off(args.n)
    if "coverage" in parts:
        print(f"2. coverage of unmarked ±2 se intervals over {args.reps} scorecards (nominal 0.95)")
        results["coverage"] = coverage(args.n, args.reps)
    if "certified" in parts:
        print(f"3. certified bounds over {args.certify_reps} repetitions")
        results["certified"] = certified(args.n, args.certify_reps)
    if "smc" in parts:
        print(f"4. SMC log Ẑ over {args.reps} independent runs")
        results["smc"] = smc_runs(args.reps)
    if "reference" in parts:
        print(f"5. coverage of unmarked ±2 se intervals against a fresh reference each time, over "
              f"{args.reference_reps} repetitions (nominal 0.95; in brackets: how many were unmarked)")
        results["reference"] = against_reference(args.n, args.reference_reps)
    print(f"done in {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
