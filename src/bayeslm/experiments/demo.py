"""`bayeslm demo`: the main job end to end on the embedded SmolLM2-135M-Instruct prior.

For a positive-sentiment target π*_β ∝ π0·exp(VADER/β):
  1. plan β from prior samples, as the β whose posterior is KL(π*_β‖π0) = `kl_budget` nats from the prior;
  2. fine-tune π_θ towards π*_β with KL-regularised RL (variational inference) and LoRA;
  3. score the prior and π_θ against π*_β's reference (log Z and π*'s samples, drawn once from the prior), so that
     KL(q‖π*) = log Z_ref − ELBO_q of both is on one scale, and keep samples of each;
  4. write the HTML report and print a before/after table, with where π* itself lies beside them.
The budgets are sized for 2 CPU cores: the full demo in under 15 minutes, `--quick` in under 3.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bayeslm.config import load
from bayeslm.distributions.loading import resolve_decoding
from bayeslm.measurement.compare import card_change, summary
from bayeslm.measurement.plan import MIN_ESS, Plan, plan_json
from bayeslm.measurement.report import write_report
from bayeslm.modelling.target_file import parse_target
from bayeslm.outputs import prepare_run_dir
from bayeslm.training.config import TrainConfig
from bayeslm.training.run import train

PROMPTS = ["Write one sentence about your day.", "Describe the weather today in one sentence."]
PLANNED_BETAS = [0.03, 0.1, 0.3, 1.0, 3.0]


@dataclass(frozen=True)
class Budget:
    plan_n: int  # prior samples per prompt for planning β
    kl_budget: float  # nats: the planned posterior's KL(π*‖π0)
    steps: int
    samples_per_prompt: int
    max_new_tokens: int
    eval_n: int  # samples per prompt for each scorecard
    lr: float = 1e-3
    schedule: str = "constant"  # the learning rate's decay (TrainConfig.schedule)
    warmup_steps: int = 0
    reference_n: int = 1024  # prior samples per prompt for the target's reference
    lora_r: int = 8  # LoRA rank (alpha = 2·r, so the update's scale alpha/r stays 2)


# Chosen on seeds 1 and 2 (bench/demo_budget.py; every try in bench/results/demo_budget.json; docs/performance.md
# says how seed 0 was used). At LoRA rank 8 the first updates cost more KL than π*'s own and KL(q‖π*) moved by
# +0.03 to −0.34 nats; at rank 1, everything else equal, it fell by 0.54–0.96 nats.
FULL = Budget(plan_n=128, kl_budget=2.0, steps=40, samples_per_prompt=16, max_new_tokens=16, eval_n=256, lr=2e-3,
              schedule="cosine", reference_n=512, lora_r=1)
QUICK = Budget(plan_n=64, kl_budget=1.0, steps=8, samples_per_prompt=6, max_new_tokens=12, eval_n=32,
               reference_n=128, lora_r=1)

# The table's rows: a figure of q, and the same figure of π* itself (from the reference; KL(π*‖π*) = 0).
SHOWN = [("kl_model_target", "KL(q‖π*)", "zero"), ("elbo", "ELBO", "log_z"),
         ("reward_mean", "reward E_q[r]", "target_reward_mean"), ("kl_target_model", "KL(π*‖q)", "zero"),
         ("kl_model_prior", "KL(q‖π0)", "kl_target_prior"), ("entropy", "entropy H(q)", "target_entropy"),
         ("distinct_2", "distinct-2", None)]



def run_demo(out: Path, *, quick: bool = False, overwrite: bool = False, quiet: bool = False, seed: int = 0,
             prior: str | dict = "default", prompts: list[str] = PROMPTS, budget: Budget | None = None,
             device: str | None = None, decoding: str | None = None) -> dict:
    """Plans, trains, evaluates and reports into `out`; returns a summary (paths, β, before/after figures).
    `prior`, `prompts` and `budget` replace the demo's own (the tests run it on a toy prior)."""
    budget = budget or (QUICK if quick else FULL)
    prepare_run_dir(out, resume=False, overwrite=overwrite)  # refuse an existing run before any work
    target_spec = {"prior": prior, "prompts": prompts, "max_new_tokens": budget.max_new_tokens,
                   "potentials": [{"exponential": {"reward": "sentiment", "beta": 1.0}}]}

    _say(quiet, f"1/3 planning β from {budget.plan_n} prior samples per prompt "
                f"(KL budget {budget.kl_budget:g} nats)")
    planner = Plan(parse_target(target_spec, Path("."), device=device, decoding=decoding), budget.plan_n, seed=seed)
    plan = plan_json(planner, PLANNED_BETAS, kl_budget=budget.kl_budget)
    beta = plan["kl_budget"]["beta"]
    min_ess = min(MIN_ESS, budget.plan_n / 4)  # a small (quick) pool vouches for a quarter of itself
    beta = planner.vouched(beta, min_ess)
    if beta != plan["kl_budget"]["beta"]:
        _say(quiet, f"   the budget's β = {plan['kl_budget']['beta']:.3g} rests on fewer than {min_ess:g} effective "
                    f"samples; using β = {beta:.3g}, the smallest the samples can vouch for")
        plan["chosen"] = {"goal": f"ESS ≥ {min_ess:g}", **planner.at(beta).to_json()}
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    target_spec["potentials"][0]["exponential"]["beta"] = round(beta, 4)

    _say(quiet, f"2/3 fine-tuning with KL-RL + LoRA towards π* ∝ π0·exp(sentiment/{beta:.3g}): {budget.steps} steps "
                f"of {len(prompts)}×{budget.samples_per_prompt} samples, then scoring the prior and the model")
    config = load(TrainConfig, {
        "target": target_spec, "objective": "klrl", "steps": budget.steps, "prompts_per_step": len(prompts),
        "samples_per_prompt": budget.samples_per_prompt, "lr": budget.lr, "schedule": budget.schedule,
        "warmup_steps": budget.warmup_steps, "lora": {"r": budget.lora_r, "alpha": 2 * budget.lora_r},
        "eval_n": budget.eval_n, "reference_n": budget.reference_n, "checkpoint_every": max(1, budget.steps // 3),
        "batch_size": 32, "seed": seed, "device": device or "auto", "decoding": resolve_decoding(decoding)})
    train(config, out, resume=False, overwrite=False, quiet=quiet)
    _say(quiet, "3/3 scored the prior and the model against π*; writing the report")
    report, warnings = write_report(out)
    before = json.loads((out / "scorecard_prior.json").read_text())
    after = json.loads((out / "scorecard.json").read_text())
    target = {**(after.get("reference") or {}), "zero": 0.0}  # π*'s figures, and KL(π*‖π*) = 0
    figures = {}
    for key, _, at_target in SHOWN:
        delta, verdict = card_change(key, before, after)
        figures[key] = {"prior": _figure(before.get(key)), "model": _figure(after.get(key)),
                        "target": _figure(target.get(at_target)), "change": delta, "verdict": verdict}
    return {"run": str(out), "report": str(report), "beta": beta, "collapse_warnings": warnings,
            "verdict": summary(before, after), "reference": after.get("reference"), "figures": figures}


def table(result: dict) -> str:
    """Prior, model and π* itself side by side, each ± its standard error, and a verdict on the change: better or
    worse when it exceeds two standard errors of the difference in the direction that brings q to π*, else within
    noise (KL(q‖π*) of two models against one reference: its ELBO's change)."""
    lines = [f"{'':14s} {'prior π0':>17s} {'model q':>17s} {'target π*':>17s}  change"]
    for key, label, _ in SHOWN:
        row = result["figures"][key]
        cells = [_cell(row[side]) for side in ("prior", "model", "target")]
        delta, verdict = row["change"], row["verdict"]
        change_text = "" if delta is None else f"{delta:+.3f}" + (f"  {verdict}" if verdict else "")
        lines.append(f"{label:14s} {cells[0]:>17s} {cells[1]:>17s} {cells[2]:>17s}  {change_text}")
    return "\n".join(lines + ["", result["verdict"]])


def _figure(figure) -> dict | None:
    """{value, stderr, unreliable} of a scorecard entry (a number has no standard error)."""
    if figure is None:
        return None
    if isinstance(figure, dict):
        return {"value": figure.get("value"), "stderr": figure.get("stderr"), "unreliable": figure.get("unreliable")}
    return {"value": figure, "stderr": None, "unreliable": None}


def _cell(figure: dict | None) -> str:
    if figure is None:
        return "–"
    if figure["value"] is None:
        return "inf"
    shown = f"{figure['value']:.3f}" + (f" ± {figure['stderr']:.3f}" if figure["stderr"] is not None else "")
    return shown + (" !" if figure["unreliable"] else "")


def _say(quiet: bool, message: str):
    if not quiet:
        print(f"bayeslm demo: {message}", file=sys.stderr)
