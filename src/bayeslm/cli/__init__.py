"""The `bayeslm` command line. Exit codes: 0 success, 2 usage or config error, 1 runtime failure.

Results go to stdout, diagnostics to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

EVALUATE_EXAMPLE = """example:
  bayeslm evaluate --target examples/toy_sentiment.yaml -n 512 --exact
  bayeslm evaluate --target examples/positive_sentiment.yaml --model runs/my-run/model --json"""


def _format_table(card) -> str:
    from bayeslm.measurement.scorecard import FIGURES

    exact = card.exact or {}
    rows = [(label, card.estimates[key], exact.get(key)) for key, label in FIGURES]
    for name, sides in (card.statistics.items() if len(card.statistics) > 1 else ()):
        for side, under in (("model", "q"), ("target", "π*")):
            rows.append((f"{name} under {under}", sides[side], exact["statistics"][name][side] if exact else None))
    width = max(len(label) for label, _, _ in rows)
    lines = [f"model  {card.model}", f"target {card.target}", f"samples {card.n}, effective {card.ess:.1f}", "",
             f"{'':{width}s} {'estimate':>12s} {'± stderr':>10s}" + (f" {'exact':>10s}" if exact else "")]
    for label, est, exact_value in rows:
        lines.append(f"{label:{width}s} {est.value:12.4f} {est.stderr:10.4f}"
                     + (f" {exact_value:10.4f}" if exact_value is not None else ""))
    lines.append("")
    lines.append("diversity  " + "  ".join(f"{k} {v:.3f}" for k, v in card.diversity.items()))
    return "\n".join(lines)


def _evaluate(args) -> int:
    """Launched as several processes (torchrun), each draws and scores its share of every prompt's samples."""
    from bayeslm.distributions.loading import load_lm
    from bayeslm.measurement.evaluation import pooled
    from bayeslm.measurement.scorecard import card
    from bayeslm.modelling.target_file import load_target
    from bayeslm.parallel import distributed

    world = distributed.init()  # first: it picks this process's GPU
    try:
        target = load_target(args.target, batch_size=args.batch_size)
        model = target.prior if args.model is None else load_lm(args.model, batch_size=args.batch_size,
                                                                chat=target.prior.chat)
        exact = None
        if args.exact:  # enumerate first: a target too large to enumerate fails before sampling
            from bayeslm.measurement.exact import Exact

            exact = world.on_main(Exact, target)
        samples = pooled(model, target, args.n, seed=args.seed, world=world)
    finally:
        distributed.close(world)
    if not world.main:
        return 0
    result = card(samples, target)
    if exact is not None:
        result.exact = exact.scorecard(model)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(_format_table(result))
    return 0


SAMPLE_EXAMPLE = """example:
  bayeslm sample --target examples/toy_constraint.yaml --method rejection -n 100 --out samples.jsonl
  bayeslm sample --target examples/toy_sentiment.yaml --method qrs --tradeoff
  bayeslm sample --target examples/toy_sentiment.yaml --method qrs --qrs-beta 3 -n 100 --out samples.jsonl

With --out, samples go to the file (one JSON object a line) and the summary to stdout; without it, samples go
to stdout and the summary to stderr."""


def _sample(args) -> int:
    from bayeslm import samplers
    from bayeslm.distributions.loading import load_lm
    from bayeslm.modelling.target_file import ConfigError, load_target

    betas = [] if args.qrs_beta is None else _floats("--qrs-beta", args.qrs_beta)
    if args.method == "qrs" and not args.tradeoff and len(betas) != 1:
        raise ConfigError("qrs samples with one bound: give --qrs-beta B (see the trade-off first with --tradeoff)")
    target = load_target(args.target, batch_size=args.batch_size)
    proposal = (target.prior if args.proposal is None
                else load_lm(args.proposal, batch_size=args.batch_size, chat=target.prior.chat))
    if args.tradeoff:
        if args.method != "qrs":
            raise ConfigError("--tradeoff goes with --method qrs")
        rows = samplers.tradeoff(target, proposal, betas or None, n=args.n, seed=args.seed)
        if args.json:
            print(json.dumps({"tradeoff": [row.to_json() for row in rows]}, indent=2))
        else:
            print(f"{'beta':>10s}" + "".join(f" {h:>16s}" for h in ("acceptance", "TV(p_β,π*)", "KL(π*‖p_β)",
                                                                   "KL(p_β‖π*)")))
            for row in rows:
                print(f"{row.beta:10.4g} " + " ".join(f"{e.value:8.4f} ± {e.stderr:5.4f}" for e in (
                    row.acceptance_rate, row.tv_qrs_target, row.kl_target_qrs, row.kl_qrs_target)))
        return 0
    try:
        # Samples go to a side file renamed over --out only on success: a failed run leaves an old file intact.
        out = open(args.out + ".partial", "w", encoding="utf-8") if args.out else sys.stdout
    except OSError as error:
        raise ConfigError(f"--out: cannot write {args.out}: {error.strerror}") from None
    common = {"n": args.n, "seed": args.seed}
    method = args.method
    try:
        if method in ("ancestral", "importance", "sir", "smc"):
            extra = {"sir": {"pool_size": args.pool}, "smc": {"ess_threshold": args.ess_threshold}}.get(method, {})
            draws = getattr(samplers, method)(target, proposal, **common, **extra)
        elif method == "rejection":
            draws = samplers.rejection(target, proposal, log_bound=args.log_bound, reward_max=args.reward_max,
                                       budget=args.budget, **common)
        elif method == "qrs":
            draws = samplers.qrs(target, proposal, beta=betas[0], budget=args.budget, **common)
        elif method == "imh":
            draws = samplers.imh(target, proposal, chains=args.chains, burn_in=args.burn_in, **common)
        else:
            draws = samplers.best_of_n(target, proposal, candidates=args.candidates, **common)
        for record in draws.records():
            out.write(json.dumps(record) + "\n")
    except BaseException as error:
        if out is not sys.stdout:
            out.close()
            os.remove(out.name)
        if isinstance(error, samplers.NoBound):
            raise ConfigError(str(error)) from None
        raise
    if out is not sys.stdout:
        out.close()
        os.replace(out.name, args.out)
    summary = json.dumps(draws.summary(), indent=2) if args.json else str(draws)
    print(summary, file=sys.stdout if args.out else sys.stderr)
    return 0


PLAN_EXAMPLE = """example:
  bayeslm plan --target examples/toy_sentiment.yaml --betas 0.1,0.3,1,3
  bayeslm plan --target examples/positive_sentiment.yaml --kl-budget 2 --json"""


def _plan(args) -> int:
    from bayeslm.measurement.plan import MIN_ESS, NoReward, Plan, plan_json
    from bayeslm.modelling.target_file import ConfigError, load_target

    betas = _floats("--betas", args.betas)
    if any(not b > 0 for b in betas):
        raise ConfigError(f"--betas: every beta must be > 0, got {args.betas}")
    target = load_target(args.target, batch_size=args.batch_size)
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
            print(f"bayeslm: warning: at beta={p.beta:.4g} some prompt has only {p.min_ess:.1f} effective samples "
                  f"(fewer than {MIN_ESS:g}): its figures are not to be trusted; draw more samples (-n) or plan "
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


def _floats(flag: str, text: str) -> list[float]:
    from bayeslm.modelling.target_file import ConfigError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


TRAIN_EXAMPLE = """example:
  bayeslm train examples/train_klrl_sentiment.yaml --out runs/klrl
  bayeslm train examples/train_klrl_sentiment.yaml --out runs/klrl --set steps=20 --set klrl.kl_estimator=k3
  bayeslm train examples/train_klrl_sentiment.yaml --out runs/klrl --resume"""


def _train(args) -> int:
    from pathlib import Path

    import yaml

    from bayeslm.config import ConfigError, override
    from bayeslm.training.config import load_config
    from bayeslm.training.loop import train

    path = Path(args.config)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read the config {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    for assignment in args.set:
        override(data, assignment)
    if args.device:
        data["device"] = args.device
    if args.decoding:
        data["decoding"] = args.decoding
    elif "BAYESLM_DECODING" in os.environ:  # the config's own key wins over the environment
        data.setdefault("decoding", os.environ["BAYESLM_DECODING"])
    config = load_config(data)
    card = train(config, Path(args.out), base=path.parent, resume=args.resume, overwrite=args.overwrite,
                 quiet=args.quiet)
    summary = {"run": args.out, "scorecard": card}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"run written to {args.out} (model in {args.out}/model)")
        for key in ("reward_mean", "kl_model_prior", "kl_model_target", "kl_target_model", "entropy"):
            if key in card and card[key]["value"] is not None:
                print(f"  {key:18s} {card[key]['value']:.4f} ± {card[key]['stderr']:.4f}")
    return 0


def _reproduce(args) -> int:
    from bayeslm.cli.reproduce import reproduce

    report = reproduce(steps=args.steps, bimodal_steps=args.bimodal_steps, figure=args.figure)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'method':10s} {'KL(π‖π*)':>10s} {'KL(π*‖π)':>10s} {'entropy':>9s} {'prior H':>9s} {'reward':>8s} "
              f"{'KL(π‖π0)':>9s}")
        for name, m in report["methods"].items():
            print(f"{name:10s} {m['kl_model_target']:10.4f} {m['kl_target_model']:10.4f} {m['entropy']:9.4f} "
                  f"{m['prior_entropy']:9.4f} {m['reward_mean']:8.4f} {m['kl_model_prior']:9.4f}")
        mass = report["bimodal"]["mass"]
        print(f"\nbimodal target, mass on {report['bimodal']['modes']}: target {_pair(mass['target'])}, "
              f"reverse KL (klrl) {_pair(mass['klrl'])}, forward KL (dpg) {_pair(mass['dpg'])}")
        print(f"max |J_KLRL − β(log Z − KL(π‖π*))| over all steps: {report['identity_error']:.2e}\n")
        for claim, holds in report["claims"].items():
            print(f"  [{'ok' if holds else 'FAILED'}] {claim.replace('_', ' ')}")
        if args.figure:
            print(f"\ncurves: {args.figure}")
    return 0 if all(report["claims"].values()) else 1


DEMO_EXAMPLE = """example:
  bayeslm demo --quick                      # a first look, under 3 minutes on 2 CPU cores
  bayeslm demo --out runs/demo --overwrite  # the full demo (what `make demo` runs), under 15 minutes"""


def _demo(args) -> int:
    from pathlib import Path

    from bayeslm.cli.demo import run_demo, table

    summary = run_demo(Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo")), quick=args.quick,
                       overwrite=args.overwrite, quiet=args.quiet, seed=args.seed)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for warning in summary["collapse_warnings"]:
        print(f"bayeslm: warning: distribution collapse: {warning}", file=sys.stderr)
    print(f"target π* ∝ π0·exp(sentiment/β), β = {summary['beta']:.4g} (planned from prior samples)\n")
    print(table(summary))
    print(f"\nreport: {Path(summary['report']).resolve()}  (open it in a browser)")
    return 0


REPORT_EXAMPLE = """example:
  bayeslm report runs/klrl                 # writes runs/klrl/report.html
  bayeslm report runs/klrl --out klrl.html --json"""


def _report(args) -> int:
    from pathlib import Path

    from bayeslm.measurement.report import write_report

    out, warnings = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    if args.json:
        print(json.dumps({"report": str(out), "collapse_warnings": warnings}, indent=2))
    else:
        for warning in warnings:
            print(f"bayeslm: warning: distribution collapse: {warning}", file=sys.stderr)
        print(f"report written to {out} (open it in a browser: file://{out.resolve()})")
    return 0


def _pair(values) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bayeslm", description="Fine-tune and sample language models as "
                                     "Bayesian inference: state a target π* ∝ π0·φ, measure any model against it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or messages on stderr (errors and "
                                                              "warnings still go there)")
    common.add_argument("--device", help="where models run: auto (the GPU when torch sees one, else the CPU), cpu, "
                                         "cuda or cuda:N (default: $BAYESLM_DEVICE, else auto)")
    common.add_argument("--decoding", choices=["eager", "compiled"],
                        help="how models sample, never what they draw: compiled decodes on a static KV cache with "
                             "one compiled graph per step, faster on a GPU after a compilation of tens of seconds "
                             "(default: $BAYESLM_DECODING, else eager)")
    evaluate = sub.add_parser("evaluate", parents=[common],
                              help="score a model against a target (the Bayesian scorecard)",
                              epilog=EVALUATE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("--target", required=True, help="target file (YAML)")
    evaluate.add_argument("--model", help="model to evaluate: a local model directory, 'default' or 'toy' "
                                          "(default: the target's prior)")
    evaluate.add_argument("-n", type=_positive_int, default=256, help="samples per prompt (default 256)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--batch-size", type=_positive_int, default=64)
    evaluate.add_argument("--exact", action="store_true", help="also compute exact values by enumeration "
                                                               "(toy priors only)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(run=_evaluate)

    sample = sub.add_parser("sample", parents=[common],
                            help="draw samples of a target with a sampler (no training)",
                            epilog=SAMPLE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sample.add_argument("--target", required=True, help="target file (YAML)")
    sample.add_argument("--method", required=True, choices=["ancestral", "importance", "sir", "rejection", "qrs",
                                                            "imh", "smc", "best-of-n"])
    sample.add_argument("-n", type=_positive_int, default=256, help="samples (SMC: particles) per prompt")
    sample.add_argument("--proposal", help="model to draw proposals from: a local model directory, 'default' or "
                                           "'toy' (default: the target's prior)")
    sample.add_argument("--out", help="write the samples here (JSON lines) instead of stdout")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", type=_positive_int, default=64)
    sample.add_argument("--budget", type=_positive_int, help="rejection/qrs: most proposals per prompt "
                                                             "(default 100·n); what was accepted is kept")
    sample.add_argument("--log-bound", type=float, help="rejection: log M, with M ≥ max P(x)/q(x)")
    sample.add_argument("--reward-max", type=float, help="rejection: the largest reward value, so that "
                                                         "M = exp(reward_max/β) (prior as proposal)")
    sample.add_argument("--qrs-beta", help="qrs: the bound β on P/q (with --tradeoff: a comma-separated list)")
    sample.add_argument("--tradeoff", action="store_true", help="qrs: estimate acceptance, TV and KL to the "
                                                                "target for each β, without sampling")
    sample.add_argument("--pool", type=_positive_int, help="sir: proposals per prompt (default 10·n)")
    sample.add_argument("--chains", type=_positive_int, help="imh: chains per prompt (default min(n, 16))")
    sample.add_argument("--burn-in", type=int, default=20, help="imh: moves discarded per chain (default 20)")
    sample.add_argument("--ess-threshold", type=float, default=0.5, help="smc: resample when the ESS falls "
                                                                         "below this fraction (default 0.5)")
    sample.add_argument("--candidates", type=_positive_int, default=4, help="best-of-n: candidates per sample")
    sample.add_argument("--json", action="store_true", help="print the summary as JSON")
    sample.set_defaults(run=_sample)

    plan = sub.add_parser("plan", parents=[common],
                          help="predict what KL-regularised RL converges to for each beta, before "
                                       "training", epilog=PLAN_EXAMPLE,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    plan.add_argument("--target", required=True, help="target file (YAML) with an exponential potential")
    plan.add_argument("--betas", default="0.01,0.03,0.1,0.3,1", help="comma-separated (default "
                                                                     "0.01,0.03,0.1,0.3,1)")
    plan.add_argument("--kl-budget", type=float, help="also solve for the beta with KL(π*‖π0) equal to this")
    plan.add_argument("--reward", type=float, help="also solve for the beta with E_π*[r] equal to this")
    plan.add_argument("-n", type=_positive_int, default=1024, help="prior samples per prompt (default 1024)")
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--batch-size", type=_positive_int, default=64)
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plan.set_defaults(run=_plan)

    train = sub.add_parser("train", parents=[common],
                           help="fine-tune a model towards a target (rl, klrl, dpg, fdpg)",
                           epilog=TRAIN_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("config", help="training config (YAML); every key is documented in docs/config.md")
    train.add_argument("--out", required=True, help="run directory to write")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set klrl.clip=0.2 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    train.add_argument("--json", action="store_true", help="print the final scorecard as JSON")
    train.set_defaults(run=_train)

    reproduce = sub.add_parser("reproduce", parents=[common],
                               help="show the KL-RL-as-inference claims on exact toy numbers",
                               epilog="example:\n  bayeslm reproduce --figure curves.png",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    reproduce.add_argument("--steps", type=_positive_int, default=300, help="training steps per method")
    reproduce.add_argument("--bimodal-steps", type=_positive_int, default=150)
    reproduce.add_argument("--figure", help="write the training curves to this PNG")
    reproduce.add_argument("--json", action="store_true")
    reproduce.set_defaults(run=_reproduce)

    demo = sub.add_parser("demo", parents=[common],
                          help="the main job on the embedded prior: plan β, train KL-RL + LoRA, "
                                       "evaluate, report", epilog=DEMO_EXAMPLE,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--quick", action="store_true", help="a smaller budget for a first look (under 3 minutes)")
    demo.add_argument("--out", help="run directory (default runs/demo, or runs/demo-quick with --quick)")
    demo.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.set_defaults(run=_demo)

    report = sub.add_parser("report", parents=[common],
                            help="write a run's self-contained HTML report (scorecards, curves, samples)",
                            epilog=REPORT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("run_dir", help="a run directory written by `bayeslm train --out`")
    report.add_argument("--out", help="where to write the HTML (default RUN_DIR/report.html)")
    report.add_argument("--json", action="store_true", help="print the report's path and warnings as JSON")
    report.set_defaults(run=_report)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    from bayeslm import progress

    progress.quiet = args.quiet
    if args.device:  # every model this command loads goes there (training configs: their `device` key)
        os.environ["BAYESLM_DEVICE"] = args.device
    if args.decoding:  # and samples this way (training configs: their `decoding` key)
        os.environ["BAYESLM_DECODING"] = args.decoding
    # Deprecation notices from inside transformers (peft calls them) are for library authors, not our users.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # stderr is for diagnostics, not weight-loading bars
    from bayeslm.distributions.loading import ModelNotFound
    from bayeslm.measurement.scorecard import NoSupport
    from bayeslm.modelling.rewards import RewardError
    from bayeslm.modelling.target_file import ConfigError
    from bayeslm.training.checkpoint import CheckpointError
    from bayeslm.training.loop import TrainingDiverged
    from bayeslm.training.objectives.log_z import NoTargetMass

    try:
        if args.device:
            from bayeslm.distributions.loading import resolve_device

            resolve_device(args.device)  # a wrong device fails now, before any model loads
        return args.run(args)
    except (ConfigError, ModelNotFound) as error:
        print(f"bayeslm: error: {error}", file=sys.stderr)
        return 2
    except (RewardError, NoSupport, NoTargetMass, CheckpointError, TrainingDiverged, ValueError) as error:
        print(f"bayeslm: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt as interrupt:
        print(f"bayeslm: interrupted{': ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
