"""Issue 21: a format as evidence on the embedded SmolLM2-135M prior, approximated four ways: rejection from the
prior, locally constrained (masked) decoding, SMC with the masked proposal, and a model trained by DPG from
masked samples (then sampled masked). One regex target and one JSON-schema target.

    .venv/bin/python bench/structured_methods.py [--n 32] [--steps 30] [--targets date,json]

Per target (examples/date_regex.yaml, examples/json_city.yaml) and method, from n samples per prompt:
  valid      the fraction of outputs in the language (complete, ended by EOS)
  KL to π0   KL(q‖π0) of what the method outputs. For samplers of π* itself (rejection, SMC) it is KL(π*‖π0) =
             −log Z, from their log Ẑ; for masked decoding and the DPG model, E_q[log q − log π0] from the samples
  KL(π*‖q)   how far the method's distribution is from the target, where it has a density (the scorecard's,
             importance-weighted: marked * where its Pareto k̂ says it cannot be trusted; — where no sample of
             some prompt is valid, so that it cannot be estimated)
  distinct   distinct-1 and distinct-2 of the outputs, pooled per prompt and averaged (SMC: resampled by weight)
  s/valid    wall seconds per valid output (DPG's: sampling only; its training time is printed apart)
Figures are recorded in docs/structured.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

EXAMPLES = common.ROOT / "examples"
TARGETS = {"date": ("date_regex.yaml", "train_dpg_date.yaml"), "json": ("json_city.yaml", "train_dpg_json.yaml")}


def diversity(texts_by_prompt) -> tuple[float, float]:
    from bayeslm.measurement.diversity import distinct_n

    groups = [g for g in texts_by_prompt if g]
    return tuple(sum(distinct_n(g, k) for g in groups) / len(groups) for k in (1, 2))


def model_row(bl, model, target, n, seed):
    """A model's figures from n samples per prompt: validity, KL(q‖π0) sampled, diversity; KL(π*‖q) from the
    scorecard where some sample of every prompt is valid (else None)."""
    from bayeslm.measurement.scorecard import card
    from bayeslm.weights import NoSupport

    started = time.perf_counter()
    samples = model.sample(target.prompts, n, target.max_new_tokens, seed=seed)
    seconds = time.perf_counter() - started
    s = target.score_samples(samples, model, keep_tokens=True)
    inside = torch.isfinite(s.log_phi)
    d1, d2 = diversity(s.texts_by_prompt())
    row = {"valid": inside.double().mean().item(), "kl_prior": (s.log_proposal - s.log_prior).mean().item(),
           "kl_target_model": None, "unreliable": False, "distinct_1": d1, "distinct_2": d2,
           "s_per_valid": seconds / max(int(inside.sum()), 1), "examples": s.texts[:3]}
    try:
        kl = card(s, target).to_json()["kl_target_model"]
        row["kl_target_model"], row["unreliable"] = kl["value"], bool(kl.get("unreliable"))
    except NoSupport:
        pass
    return row


def sampler_row(bl, target, method, n, seed, **options):
    """A sampler of π*: its outputs (SMC's resampled by weight), KL(π*‖π0) = −log Ẑ."""
    started = time.perf_counter()
    draws = bl.sample(target, method, n=n, seed=seed, **options)
    seconds = time.perf_counter() - started
    s = draws.samples
    if method == "smc":  # n draws per prompt, by weight, from the particles
        w = draws.weights()
        picked = [torch.multinomial(w * (s.prompt_index == c), n, replacement=True,
                                    generator=torch.Generator().manual_seed(seed)) for c in range(len(s.prompts))]
        s = s.take(torch.cat(picked))
    inside = torch.isfinite(s.log_phi)
    texts = [[t for t, i in zip(s.texts, s.prompt_index.tolist()) if i == c] for c in range(len(s.prompts))]
    d1, d2 = diversity(texts)
    log_z = draws.log_z
    return {"valid": inside.double().mean().item(), "kl_prior": -log_z.value, "kl_target_model": None,
            "unreliable": bool(log_z.unreliable), "distinct_1": d1, "distinct_2": d2,
            "s_per_valid": seconds / max(int(inside.sum()), 1), "log_z_stderr": log_z.stderr}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32, help="samples (SMC: particles) per prompt")
    parser.add_argument("--steps", type=int, help="DPG steps (default: the example config's)")
    parser.add_argument("--targets", default="date,json")
    parser.add_argument("--budget", type=int, default=2048, help="rejection: proposals per prompt at most")
    parser.add_argument("--out", default="runs/bench-structured")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    common.print_machine()
    import bayeslm as bl
    from bayeslm.modelling.target_file import load_target
    from bayeslm.weights import NoSupport

    figures = {"machine": common.machine(), "settings": vars(args), "targets": {}}
    for name in args.targets.split(","):
        target_file, train_file = TARGETS[name]
        target = load_target(EXAMPLES / target_file)
        rows = {}
        rows["prior"] = model_row(bl, target.prior, target, args.n, seed=1)
        try:
            rows["rejection"] = sampler_row(bl, target, "rejection", args.n, seed=2, budget=args.budget)
        except NoSupport as error:  # a prompt met nowhere within the budget: said, not hidden
            rows["rejection"] = {"failed": str(error)[:300]}
        rows["masked"] = model_row(bl, bl.masked(target), target, args.n, seed=3)
        rows["smc masked"] = sampler_row(bl, target, "smc", args.n, seed=4, proposal=bl.masked(target))
        config = yaml.safe_load((EXAMPLES / train_file).read_text())
        config.pop("target")
        objective = config.pop("objective")
        if args.steps:
            config["steps"] = args.steps
        lora = bl.LoRA(**config.pop("lora"))
        started = time.perf_counter()
        run = bl.train(target, objective, lora=lora, out=Path(args.out) / name, overwrite=True, quiet=True,
                       **config)
        train_minutes = (time.perf_counter() - started) / 60
        rows["dpg"] = model_row(bl, run.model, target, args.n, seed=5)
        rows["dpg masked"] = model_row(bl, bl.masked(target, run.model), target, args.n, seed=6)
        figures["targets"][name] = {"rows": rows, "dpg_train_minutes": train_minutes}
        print(f"\n## {name} ({target_file}; DPG trained {train_minutes:.1f} min, {config['steps']} steps)")
        print(f"{'method':12s} {'valid':>6s} {'KL to π0':>9s} {'KL(π*‖q)':>9s} {'distinct-1':>10s} "
              f"{'distinct-2':>10s} {'s/valid':>8s}")
        for method, row in rows.items():
            if "failed" in row:
                print(f"{method:12s} failed: {row['failed']}")
                continue
            kl = row["kl_target_model"]
            cell = "—" if kl is None else "inf" if kl is None or math.isinf(kl) else f"{kl:.2f}"
            mark = "*" if row["unreliable"] else ""
            print(f"{method:12s} {row['valid']:6.2f} {row['kl_prior']:9.2f} {cell + mark:>9s} "
                  f"{row['distinct_1']:10.3f} {row['distinct_2']:10.3f} {row['s_per_valid']:8.3f}")
    common.emit_json(args.json, figures)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
