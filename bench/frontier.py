"""The reward–KL frontier on SmolLM2-135M-Instruct: where each method lands against the optimal curve, every figure
measured against one reference of the target on held-out prompts.

    .venv/bin/python bench/frontier.py --json bench/results/frontier.json --plot docs/frontier.png
    .venv/bin/python bench/frontier.py --quick            # a few minutes: the pipeline, not the figures

The target is π*_β ∝ π0·exp(VADER/β). β is planned on the 8 training prompts (the β whose posterior sits
`--kl-budget` nats from the prior); every figure is measured on 8 held-out prompts, against one reference of the
held-out target (n prior samples per prompt, cached). The optimal curve is π*_β's own (KL(π*_β‖π0), E_π*_β[r]) for
a range of β, from the same reference samples reweighted by exp(r/β). Each arm lands at (KL(q‖π0), E_q[r]):

    prior            π0 itself
    pure RL          maximises E[r] (β → 0): collapses off the curve
    KL-RL β, 2β      maximises E[r] − β·KL(q‖π0), i.e. minimises KL(q‖π*_β)
    KL-RL in TRL's   KL-RL at β given the training time TRL's RLOO took (its steps scaled by the two arms' seconds)
    time
    DPG              minimises the forward KL(π*_β‖q), from the prior's samples
    TB               trajectory balance: fits q and log Z together
    TRL RLOO         TRL's RLOOTrainer at the same β (k1 KL inside the reward), in its own virtual environment
                     (bench/trl_rloo.py), its merged model scored here like every other arm
    best-of-n        n = 2, 4, 8, 16 prior samples, the best kept (no training); its law and KLs follow exactly from
                     the reference's reward table: BoN(v_j)/π0 = (F_j^n − F_{j−1}^n)/p_j over its reward values v_j

Every trained arm but the equal-time one gets the same samples (steps × prompts_per_step × samples_per_prompt),
learning rate, LoRA rank and seeds; mean ± standard error over the seeds. LoRA rank 1 (alpha 2): at rank 8 and
this learning rate one Adam step moved the demo's model 1.5 nats from the prior, more than π*'s whole KL
(bench/results/demo_budget.json). Each record holds the command, commit, date, machine and load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch  # noqa: E402
from common import PROMPTS, ROOT, machine, peer_venv
from vs_trl import TRL_PACKAGES, TRL_VENV

import bayeslm as bl  # noqa: E402
from bayeslm.distributions.loading import _default_prior_dir  # noqa: E402
from bayeslm.measurement.plan import Plan  # noqa: E402
from bayeslm.measurement.scorecard import scorecard  # noqa: E402
from bayeslm.weights import log_mean_exp  # noqa: E402

TRAIN, HELD_OUT = PROMPTS[:8], PROMPTS[8:]
FIGURES = ("reward_mean", "kl_model_prior", "kl_model_target", "kl_target_model", "elbo", "entropy", "distinct_2")
CURVE_BETAS = [0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 3.0]
BEST_OF = (2, 4, 8, 16)


def target_for(prompts, beta: float, max_new_tokens: int):
    """A fresh prior each time: LoRA injects into the prior's own modules, so every trained arm needs its own."""
    prior = bl.load_lm("default", batch_size=32)
    return (prior * bl.Exponential(bl.rewards.sentiment(), beta=beta)).given(prompts, max_new_tokens)


def curve(reference, beta: float) -> list[dict]:
    """π*_b's (KL(π*_b‖π0), E_π*_b[r]) for each b in CURVE_BETAS, from the reference's prior samples reweighted by
    exp(r/b) (the reference's own weights are exp(r/β): the samples are the prior's)."""
    samples = reference.samples
    reward = samples.grid(samples.reward)
    points = []
    for b in CURVE_BETAS + [beta]:
        log_w = reward / b
        log_z = log_mean_exp(log_w, -1)
        weights = torch.softmax(log_w, -1)
        points.append({"beta": b, "reward": (weights * reward).sum(-1).mean().item(),
                       "kl_to_prior": ((weights * log_w).sum(-1) - log_z).mean().item(),
                       "ess": (1 / (weights ** 2).sum(-1)).mean().item()})
    return sorted(points, key=lambda p: p["beta"])


def best_of_n(reference, beta: float, n: int) -> dict:
    """Best-of-n from the prior, exactly on the reference's empirical reward distribution: E[r], KL to the prior
    and both KLs to π*_β (which has density ratio exp(r/β)/Z to π0)."""
    samples = reference.samples
    reward = samples.grid(samples.reward)
    rows = {"reward_mean": [], "kl_model_prior": [], "kl_model_target": [], "kl_target_model": []}
    for c in range(reward.shape[0]):
        values, counts = torch.unique(reward[c], return_counts=True)  # sorted
        p = counts.double() / counts.sum()
        cdf = p.cumsum(0)
        below = torch.cat([torch.zeros(1, dtype=torch.float64), cdf[:-1]])
        bon = cdf ** n - below ** n  # P_BoN(reward = v_j)
        log_ratio = torch.log(bon) - torch.log(p)  # BoN/π0 on each text of reward v_j
        log_z = torch.logsumexp(values / beta + torch.log(p), 0)
        target = torch.softmax(values / beta + torch.log(p), 0)  # π*_β's law of the reward
        rows["reward_mean"].append((bon * values).sum().item())
        rows["kl_model_prior"].append((bon * log_ratio).sum().item())
        rows["kl_model_target"].append((bon * (log_ratio - values / beta)).sum().item() + log_z.item())
        rows["kl_target_model"].append((target * (values / beta - log_ratio)).sum().item() - log_z.item())
    return {key: {"value": statistics.fmean(v), "stderr": None} for key, v in rows.items()}


def train_arm(objective, beta: float, seed: int, args, steps: int | None = None) -> tuple:
    target = target_for(TRAIN, beta, args.max_new_tokens)
    started = time.perf_counter()
    run = bl.train(target, objective, steps=steps or args.steps, prompts_per_step=args.prompts_per_step,
                   samples_per_prompt=args.samples_per_prompt, lr=args.lr,
                   lora=bl.LoRA(r=args.lora_r, alpha=2 * args.lora_r), seed=seed, eval_n=0, quiet=True)
    return run.model, time.perf_counter() - started


def equal_time_steps(results: dict, args) -> int:
    """KL-RL's steps in the time TRL's RLOO took for `args.steps` (both measured here, mean over seeds)."""
    if not {"klrl", "trl_rloo"} <= set(results):
        raise SystemExit("the klrl_equal_time arm needs the klrl and trl_rloo arms before it (--arms)")
    return round(args.steps * results["trl_rloo"]["seconds"] / results["klrl"]["seconds"])


def trl_arm(beta: float, seed: int, args, work: Path) -> tuple:
    """TRL's RLOOTrainer with the same samples, β, learning rate and LoRA, run in its own environment; its merged
    model is loaded here and scored like every other arm. The seconds are TRL's training alone."""
    python = peer_venv(TRL_VENV, *TRL_PACKAGES)
    prompts, out = work / "prompts.json", work / f"trl_seed{seed}"
    prompts.write_text(json.dumps(TRAIN))
    command = [str(python), str(Path(__file__).with_name("trl_rloo.py")), "--model-dir", str(_default_prior_dir()),
               "--out", str(out), "--prompts-json", str(prompts), "--steps", str(args.steps),
               "--prompts-per-step", str(args.prompts_per_step), "--samples-per-prompt", str(args.samples_per_prompt),
               "--lr", str(args.lr), "--beta", str(beta), "--lora-r", str(args.lora_r),
               "--max-new-tokens", str(args.max_new_tokens), "--seed", str(seed)]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise RuntimeError(f"the TRL arm failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len("RESULT "):])
    return bl.load_lm(str(out), batch_size=32), result["seconds"], result


def figures(card) -> dict:
    out = {key: (card[key].to_json() if key in card.estimates else {"value": card.diversity[key], "stderr": None})
           for key in FIGURES}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--samples-per-prompt", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--lora-r", type=int, default=1, help="LoRA rank of every trained arm (alpha = 2r)")
    parser.add_argument("--kl-budget", type=float, default=2.0)
    parser.add_argument("--reference-n", type=int, default=256, help="prior samples per held-out prompt")
    parser.add_argument("--eval-n", type=int, default=32, help="samples of each model per held-out prompt")
    parser.add_argument("--arms", default="prior,rl,klrl,klrl_2beta,dpg,tb,trl_rloo,klrl_equal_time,best_of")
    parser.add_argument("--quick", action="store_true", help="one seed, 4 steps, small pools: checks the pipeline")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--resume", type=Path, help="a .partial.json of a run cut short with the same settings: its "
                                                    "arms are taken from it, the others run")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.reference_n, args.eval_n, args.max_new_tokens = 1, 4, 32, 8, 12
    work = Path(tempfile.mkdtemp(prefix="frontier-"))  # the TRL arm's saved models
    commit = _commit()  # the code the arms run: taken now, as the tree may move on during a long run
    load = Path("/proc/loadavg").read_text().split()[:3]
    started = time.perf_counter()

    planner = Plan(target_for(TRAIN, 1.0, args.max_new_tokens), 128, seed=0)  # β planned on training prompts
    beta = planner.vouched(planner.beta_for_kl(args.kl_budget))  # as the demo: a tilt the pool can see
    held_out = target_for(HELD_OUT, beta, args.max_new_tokens)
    reference = bl.reference(held_out, args.reference_n, seed=1, source="prior")
    print(f"β = {beta:.4g} (planned for KL(π*‖π0) = {args.kl_budget} nats on the training prompts)\n{reference}",
          flush=True)
    objectives = {"rl": (lambda: bl.RL(), beta), "klrl": (lambda: bl.KLRL(), beta),
                  "klrl_2beta": (lambda: bl.KLRL(), 2 * beta), "dpg": (lambda: bl.DPG(proposal="prior"), beta),
                  "tb": (lambda: bl.TB(), beta)}
    arms = args.arms.split(",")
    results, peers, resumed = {}, {}, None
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "plot", "resume", "arms")}
    if args.resume:  # the same β and settings, or the arms would not be comparable
        resumed = json.loads(args.resume.read_text())
        if not math.isclose(resumed["beta"], beta, rel_tol=1e-9):
            parser.error(f"--resume: {args.resume} was planned at β = {resumed['beta']}, this run at {beta}")
        if resumed.get("settings", settings) != settings:
            parser.error(f"--resume: {args.resume} ran with other settings: {resumed['settings']}")
        results.update({arm: run for arm, run in resumed["arms"].items() if arm in arms})
    for arm in (a for a in arms if a not in results):
        if arm == "best_of":
            for n in BEST_OF:
                results[f"best_of_{n}"] = {"runs": [best_of_n(reference, beta, n)], "samples": n, "seconds": None}
            continue
        runs, seconds = [], []
        for seed in range(args.seeds):
            if arm == "prior":
                model, took = held_out.prior, 0.0
            elif arm == "trl_rloo":
                model, took, peers[f"trl_rloo_seed{seed}"] = trl_arm(beta, seed, args, work)
            elif arm == "klrl_equal_time":
                model, took = train_arm(bl.KLRL(), beta, seed, args, steps=equal_time_steps(results, args))
            else:
                make, arm_beta = objectives[arm]
                model, took = train_arm(make(), arm_beta, seed, args)
            card = scorecard(model, held_out, args.eval_n, seed=100 + seed, reference=reference)
            runs.append(figures(card))
            seconds.append(took)
            print(f"{arm} seed {seed}: " + ", ".join(f"{k} {v['value']:.3f}" for k, v in runs[-1].items()
                                                     if v["value"] is not None) + f" ({took:.0f} s)", flush=True)
        steps = equal_time_steps(results, args) if arm == "klrl_equal_time" else args.steps
        samples = 0 if arm == "prior" else steps * args.prompts_per_step * args.samples_per_prompt
        results[arm] = {"runs": runs, "samples": samples, "seconds": statistics.fmean(seconds)}
        if args.json:  # what is done so far survives a run cut short
            args.json.with_suffix(".partial.json").write_text(json.dumps(
                {"beta": beta, "settings": settings, "commit": commit, "arms": results}, default=str))
    shutil.rmtree(work)
    summary = {arm: aggregate(r["runs"]) for arm, r in results.items()}
    table = render(summary, results, beta, reference)
    print(table)
    record = {"command": " ".join(["bench/frontier.py", *sys.argv[1:]]),
              "commit": commit,
              "date": datetime.date.today().isoformat(), "machine": machine(), "load_before": load,
              "settings": vars(args) | {"json": str(args.json), "plot": str(args.plot), "resume": str(args.resume)},
              "resumed": None if resumed is None else {"arms": sorted(a for a in resumed["arms"] if a in arms),
                                                       "commit": resumed.get("commit")},
              "beta": beta,
              "train_prompts": TRAIN, "held_out_prompts": HELD_OUT, "reference": reference.to_json(),
              "curve": curve(reference, beta), "arms": results, "peers": peers, "summary": summary,
              "seconds": time.perf_counter() - started, "table": table}
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
        args.json.with_suffix(".partial.json").unlink(missing_ok=True)
        args.json.with_suffix(".txt").write_text(f"# {record['command']} (commit {record['commit']}, "
                                                 f"{record['date']})\n{table}\n")
    if args.plot:
        plot(record, args.plot)


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def aggregate(runs: list[dict]) -> dict:
    """Mean over seeds, and its standard error (between seeds; with one seed, the run's own)."""
    out = {}
    for key in runs[0]:
        values = [r[key]["value"] for r in runs]
        if any(v is None for v in values):
            out[key] = {"value": None, "stderr": None}
            continue
        mean = statistics.fmean(values)
        stderr = (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1
                  else runs[0][key]["stderr"])
        out[key] = {"value": mean, "stderr": stderr}
    return out


def render(summary: dict, results: dict, beta: float, reference) -> str:
    target = reference.figures()
    lines = [f"π*: β = {beta:.4g}, E_π*[r] = {target['target_reward_mean']}, KL(π*‖π0) = "
             f"{target['kl_target_prior']}, log Z = {target['log_z']}", "",
             f"{'arm':12s}" + "".join(f" {k:>17s}" for k in FIGURES) + f" {'samples':>8s} {'seconds':>8s}"]
    for arm, figures_ in summary.items():
        cells = []
        for key in FIGURES:
            e = figures_.get(key)  # best-of-n has no ELBO, entropy or distinct-n from its reward table
            if e is None:
                cells.append("–")
                continue
            cells.append("inf" if e["value"] is None else f"{e['value']:.3f}" + (
                f" ± {e['stderr']:.3f}" if e["stderr"] is not None else ""))
        seconds = results[arm]["seconds"]
        lines.append(f"{arm:12s}" + "".join(f" {c:>17s}" for c in cells)
                     + f" {results[arm]['samples']:>8d} {'' if seconds is None else f'{seconds:.0f}':>8s}")
    return "\n".join(lines)


def plot(record: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    points = record["curve"]
    ax.plot([p["kl_to_prior"] for p in points], [p["reward"] for p in points], "k-", label="π*_β (optimal)")
    colours = plt.get_cmap("tab20").colors  # one colour an arm: the default cycle repeats after ten
    for i, (arm, figures_) in enumerate(record["summary"].items()):
        kl, reward = figures_["kl_model_prior"], figures_["reward_mean"]
        ax.errorbar(kl["value"], reward["value"], xerr=kl["stderr"] or 0, yerr=reward["stderr"] or 0,
                    fmt="s" if arm.startswith("best_of") else "o", color=colours[i % len(colours)], label=arm,
                    capsize=2)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("KL(q‖π0), nats")
    ax.set_ylabel("E_q[VADER]")
    ax.set_title(f"SmolLM2-135M, held-out prompts, β = {record['beta']:.3g}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
