"""`bayeslm evaluate`: the scorecard of a model against a target, with exact values on toy priors."""

from __future__ import annotations

import json
import sys

from bayeslm.cli.common import models_from, positive_int, subparser

EXAMPLE = """example:
  bayeslm evaluate --target examples/toy_sentiment.yaml -n 512 --exact
  bayeslm evaluate --target examples/positive_sentiment.yaml --model runs/my-run/model --json"""


def add(sub, parents):
    parser = subparser(sub, "evaluate", parents, "score a model against a target (the Bayesian scorecard)", EXAMPLE)
    parser.add_argument("--target", required=True, help="target file (YAML)")
    parser.add_argument("--model", help="model to evaluate: a local model directory, 'default' or 'toy' "
                                        "(default: the target's prior)")
    parser.add_argument("-n", type=positive_int, default=256, help="samples per prompt (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--exact", action="store_true", help="also compute exact values by enumeration "
                                                             "(toy priors only)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)
    return parser


def run(args) -> int:
    """Launched as several processes (torchrun), each draws and scores its share of every prompt's samples."""
    from bayeslm.distributions.loading import load_lm
    from bayeslm.measurement.evaluation import pooled
    from bayeslm.measurement.scorecard import card
    from bayeslm.modelling.target_file import load_target
    from bayeslm.parallel import distributed

    with distributed.joined() as world:  # first: it picks this process's GPU
        target = load_target(args.target, **models_from(args))
        model = target.prior if args.model is None else load_lm(args.model, chat=target.prior.chat,
                                                                **models_from(args))
        exact = None
        if args.exact:  # enumerate first: a target too large to enumerate fails before sampling
            from bayeslm.measurement.exact import Exact

            exact = world.on_main(Exact, target)
        samples = pooled(model, target, args.n, seed=args.seed, world=world)
    if not world.main:
        return 0
    result = card(samples, target)
    if exact is not None:
        result.exact = exact.scorecard(model)
    print(json.dumps(result.to_json(), indent=2) if args.json else result)
    reasons = sorted({e.unreliable for e in result.estimates.values() if e.unreliable})
    for reason in reasons:
        print(f"bayeslm: warning: unreliable estimates: {reason}", file=sys.stderr)
    return 0
