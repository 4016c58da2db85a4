"""The `bayeslm` command line. Exit codes: 0 success, 2 usage or config error, 1 runtime failure.

Results go to stdout, diagnostics to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

EVALUATE_EXAMPLE = """example:
  bayeslm evaluate --target examples/toy_sentiment.yaml -n 512 --exact
  bayeslm evaluate --target examples/positive_sentiment.yaml --model runs/my-run/model --json"""

ROWS = [("log_z", "log Z"), ("elbo", "ELBO"), ("eubo", "EUBO"), ("kl_model_target", "KL(q‖π*)"),
        ("kl_target_model", "KL(π*‖q)"), ("tv_model_target", "TV(q,π*)"), ("kl_model_prior", "KL(q‖π0)"),
        ("kl_model_prior_sampled", "KL(q‖π0) sampled"), ("reward_mean", "reward under q"),
        ("target_reward_mean", "reward under π*"), ("entropy", "entropy H(q), nats")]


def _format_table(card) -> str:
    exact = card.exact or {}
    lines = [f"model  {card.model}", f"target {card.target}", f"samples {card.n}, effective {card.ess:.1f}", ""]
    header = f"{'':20s} {'estimate':>12s} {'± stderr':>10s}" + (f" {'exact':>10s}" if exact else "")
    lines.append(header)
    for key, label in ROWS:
        est = card.estimates[key]
        row = f"{label:20s} {est.value:12.4f} {est.stderr:10.4f}"
        if exact and key in exact:
            row += f" {exact[key]:10.4f}"
        lines.append(row)
    for name, sides in (card.statistics.items() if len(card.statistics) > 1 else ()):
        for side in ("model", "target"):
            est = sides[side]
            row = f"{(name + ' | ' + ('q' if side == 'model' else 'π*'))[:20]:20s} {est.value:12.4f} {est.stderr:10.4f}"
            if exact:
                row += f" {exact['statistics'][name][side]:10.4f}"
            lines.append(row)
    lines.append("")
    lines.append("diversity  " + "  ".join(f"{k} {v:.3f}" for k, v in card.diversity.items()))
    return "\n".join(lines)


def _evaluate(args) -> int:
    from bayeslm.estimate import scorecard
    from bayeslm.models import load_lm
    from bayeslm.target_file import load_target

    target = load_target(args.target, batch_size=args.batch_size)
    model = target.prior if args.model is None else load_lm(args.model, batch_size=args.batch_size,
                                                            chat=target.prior.chat)
    exact = None
    if args.exact:  # enumerate first: a target too large to enumerate fails before any sampling
        from bayeslm.exact import Exact

        exact = Exact(target)
    card = scorecard(model, target, n=args.n, seed=args.seed)
    if exact is not None:
        card.exact = exact.scorecard(model)
    if args.json:
        print(json.dumps(card.to_json(), indent=2))
    else:
        print(_format_table(card))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bayeslm", description="Fine-tune and sample language models as "
                                     "Bayesian inference: state a target π* ∝ π0·φ, measure any model against it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    evaluate = sub.add_parser("evaluate", help="score a model against a target (the Bayesian scorecard)",
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
    import transformers

    transformers.utils.logging.disable_progress_bar()  # stderr is for diagnostics, not weight-loading bars
    from bayeslm.estimate import NoSupport
    from bayeslm.models import ModelNotFound
    from bayeslm.rewards import RewardError
    from bayeslm.target_file import ConfigError

    try:
        return args.run(args)
    except (ConfigError, ModelNotFound) as error:
        print(f"bayeslm: error: {error}", file=sys.stderr)
        return 2
    except (RewardError, NoSupport, ValueError) as error:
        print(f"bayeslm: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bayeslm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
