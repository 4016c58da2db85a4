"""`bayeslm guard`: guaranteed generation for a target of hard constraints (see `bayeslm.experiments.guard`).

FILE is a training config (it names its `target:`) or a target file, which is then trained towards with DPG and
the adaptive proposal, 32 samples a step (`--set steps=40` and any other training key apply to either). With
--model, a proposal trained before is measured and sampled instead, and nothing is trained.
"""

from __future__ import annotations

import json
from pathlib import Path

from bayeslm.cli.common import positive_int, seed_int, subparser
from bayeslm.cli.train import load_data
from bayeslm.config import ConfigError, override

EXAMPLE = """example:
  bayeslm guard examples/toy_constraint.yaml --out runs/guard-toy --set steps=40 --set lr=0.003 --exact
  bayeslm guard examples/guard_weekend_by_the_sea.yaml --out runs/guard-sea --correct imh
  bayeslm guard examples/weekend_by_the_sea.yaml --model runs/guard-sea/model --out runs/guard-sea-again

Writes the training run (with --model: nothing of it), guard.json (acceptance rates and KL(g‖g′) of the prior
and the trained proposal) and guard_samples.jsonl (samples filtered by the constraints) to --out."""

# Training towards a target file: DPG, with enough samples a step for its adaptive proposal to judge the weights.
DEFAULTS = {"objective": {"dpg": {"proposal": "adaptive"}}, "samples_per_prompt": 32}


def add(sub, parents):
    parser = subparser(sub, "guard", parents, "guaranteed generation: train a proposal towards a constraint target "
                                              "(DPG), then sample it filtered by the constraint", EXAMPLE)
    parser.add_argument("config", metavar="FILE", help="a training config (YAML, with target:) or a target file")
    parser.add_argument("--out", required=True, help="directory to write the run and the results to")
    parser.add_argument("--model", help="a trained proposal (a local model directory) to use instead of training one")
    parser.add_argument("-n", type=positive_int, default=256, help="samples per prompt: for each figure and to keep")
    parser.add_argument("--correct", choices=["imh", "qrs"],
                        help="also sample the target from the trained proposal with independent Metropolis-Hastings "
                             "or quasi-rejection sampling")
    parser.add_argument("--tv", type=float, help="with --correct qrs: choose its bound as the most accepting whose TV "
                                                 "distance to the target is at most this (default 0.05)")
    parser.add_argument("--exact", action="store_true", help="also compute the figures by enumeration (toy priors)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training config key, e.g. --set steps=40 (repeatable)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(run=run, preflight=preflight)
    return parser


def config_data(args) -> dict:
    """The training config: FILE's own, or DPG towards the target file FILE; with --set and the device flags."""
    path = Path(args.config)
    data = load_data(path, [])
    if "target" not in data:
        data = {"target": path.name, **DEFAULTS}
    for assignment in args.set:
        override(data, assignment)
    for key in ("device", "decoding"):
        if getattr(args, key):
            data[key] = getattr(args, key)
    return data


def preflight(args):
    from bayeslm.preflight import check_train

    if args.correct != "qrs" and args.tv is not None:
        raise ConfigError("--tv goes with --correct qrs")
    check_train(config_data(args), Path(args.config).parent)


def run(args) -> int:
    from bayeslm.distributions.loading import load_lm
    from bayeslm.experiments.guard import measure_and_sample
    from bayeslm.modelling.potentials import only_constraints
    from bayeslm.outputs import refuse_other_run
    from bayeslm.training.config import load_config
    from bayeslm.training.run import train
    from bayeslm.training.setup import resolve_target

    base = Path(args.config).parent
    if args.model:  # no run to make: --out must still be a new directory or bayeslm's own
        refuse_other_run(Path(args.out), resume=True, overwrite=False)
    config = load_config(config_data(args))
    target = resolve_target(config, base)
    only_constraints(target.potential, "guard")  # before training
    if args.model:
        model, run_ = load_lm(args.model, chat=target.prior.chat_spec, batch_size=config.batch_size,
                              device=config.device, decoding=config.decoding), None
    else:
        run_ = train(config, Path(args.out), target=target, base=base, overwrite=args.overwrite, quiet=args.quiet)
        model = run_.model
    correct = {"qrs": {"tv": args.tv or 0.05}} if args.correct == "qrs" else args.correct
    result = measure_and_sample(run_.target if run_ else target, model, run_, n=args.n, correct=correct,
                                exact=args.exact, out=args.out, seed=args.seed)
    if args.json:
        print(json.dumps({"out": args.out, **result.to_json()}, indent=2))
    else:
        print(result)
        print(f"\nwritten to {args.out}: guard.json, guard_samples.jsonl" + ("" if args.model else ", the run"))
    return 0
