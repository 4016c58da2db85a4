"""`bayeslm sample`: draw samples of a target with a sampler from the registry (no training).

The sampler options are flags read from the registry: every option of every registered sampler becomes
`--option-name`, and a flag of one sampler given with another is an error naming the sampler it belongs to. A
sampler of your own (`--method package.module:Name`) takes its options as `--set name=value`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from bayeslm.cli.common import floats, masked_proposal, models_from, positive_int, preflight_target, seed_int, subparser
from bayeslm.config import ConfigError, override

EXAMPLE = """example:
  bayeslm sample --target examples/toy_constraint.yaml --method rejection -n 100 --out samples.jsonl
  bayeslm sample --target examples/toy_sentiment.yaml --method qrs --tradeoff
  bayeslm sample --target examples/toy_sentiment.yaml --method qrs --qrs-beta 3 -n 100 --out samples.jsonl
  bayeslm sample --target examples/toy_sentiment.yaml --method my_package.samplers:Mine --set steps=3
  bayeslm sample --target examples/toy_regex.yaml --method smc --mask -n 16

With --out, samples go to the file (one JSON object a line) and the summary to stdout; without it, samples go
to stdout and the summary to stderr."""


def _options() -> dict[str, tuple[type, list[str], str]]:
    """Every option of the built-in samplers: its type, the samplers that take it, and its documentation, read
    from the schema (`bayeslm.preflight`) so that the flags exist without importing the samplers and torch."""
    from bayeslm.preflight import schema

    options = {}
    for name, fields in schema()["sampler"].items():
        for option, spec in fields.items():
            first = next(t for t in spec["type"].split(" | ") if t != "None")
            kind = {"int": int, "float": float}.get(first, str)
            _, owners, doc = options.get(option, (kind, [], spec["doc"]))
            options[option] = (kind, owners + [name], doc)
    return options


def add(sub, parents):
    parser = subparser(sub, "sample", parents, "draw samples of a target with a sampler (no training)", EXAMPLE)
    parser.add_argument("--target", required=True, help="target file (YAML)")
    parser.add_argument("--method", required=True, metavar="METHOD",
                        help="a sampler's name (docs/config.md lists them), or the dotted path of your own "
                             "(package.module:Name)")
    parser.add_argument("-n", type=positive_int, default=256, help="samples (SMC: particles) per prompt")
    parser.add_argument("--proposal", help="model to draw proposals from: a local model directory, 'default' or "
                                           "'toy' (default: the target's prior)")
    parser.add_argument("--mask", action="store_true",
                        help="mask the proposal to the target's regex, grammar and json_schema languages (locally "
                             "constrained decoding, its exact log-probabilities kept: the sampler corrects it)")
    parser.add_argument("--out", help="write the samples here (JSON lines) instead of stdout")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the sampler, e.g. for your own sampler (repeatable)")
    parser.add_argument("--tradeoff", nargs="?", const="", metavar="BETAS",
                        help="qrs: estimate acceptance, TV and KL to the target for each bound β (comma-separated; "
                             "default: spread over the pooled weights), without sampling")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run, preflight=preflight)
    return parser


def add_options(parser):
    """Every option of every registered sampler as a flag (`--ess-threshold`), added only when the command is
    `sample`: reading the registry imports the samplers, which the other commands' start need not wait for."""
    for option, (kind, owners, doc) in _options().items():
        parser.add_argument("--" + option.replace("_", "-"), dest=f"option_{option}", metavar=option.upper(),
                            type=kind if kind in (int, float) else str, help=f"{', '.join(owners)}: {doc}")


def sampler_from(args):
    """The sampler named by --method with the options given as flags and --set."""
    from bayeslm.samplers import SAMPLERS

    try:
        entry = SAMPLERS.get(args.method)
    except ConfigError as error:
        raise ConfigError(f"--method: {error}") from None
    given = {k.removeprefix("option_"): v for k, v in vars(args).items() if k.startswith("option_") and v is not None}
    known = {f.name for f in dataclasses.fields(entry)} if dataclasses.is_dataclass(entry) else set()
    for option in given:
        if option not in known:
            owners = _options()[option][1]
            raise ConfigError(f"--{option.replace('_', '-')} is an option of {', '.join(owners)}, not of "
                              f"{args.method}")
    for assignment in args.set:
        override(given, assignment)
    for f in dataclasses.fields(entry) if dataclasses.is_dataclass(entry) else ():
        if f.name not in given and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"--method {args.method} needs --{f.name.replace('_', '-')} ({f.metadata.get('doc')})")
    return SAMPLERS.build({args.method: given}, "--method")


def preflight(args):
    """The target file, and --out that replaces none of the inputs and no file of a run, before torch."""
    from bayeslm.outputs import refuse_to_replace

    preflight_target(args)
    if ":" not in args.method:  # a registered sampler's options and their ranges (your own: at its build)
        from bayeslm.preflight import canonical, check_entry, schema

        options = {k.removeprefix("option_"): v for k, v in vars(args).items()
                   if k.startswith("option_") and v is not None}
        samplers, method = schema()["sampler"], canonical("sampler", args.method)
        for option in options if method in samplers else ():
            if option not in samplers[method]:
                owners = [name for name, fields in samplers.items() if option in fields]
                raise ConfigError(f"--{option.replace('_', '-')} is an option of {', '.join(owners)}, not of "
                                  f"{args.method}")
        for assignment in args.set:
            override(options, assignment)
        check_entry("sampler", {args.method: options}, "--method")
    if args.out:
        refuse_to_replace(Path(args.out), [Path(args.target), args.proposal and Path(args.proposal)])


def run(args) -> int:
    from bayeslm import api, samplers
    from bayeslm.distributions.loading import load_lm
    from bayeslm.modelling.target_file import load_target

    sampler = None if args.tradeoff is not None else sampler_from(args)  # options checked before any model loads
    if args.tradeoff is not None and args.method != "qrs":
        raise ConfigError("--tradeoff goes with --method qrs")
    target = load_target(args.target, **models_from(args))
    proposal = (target.prior if args.proposal is None
                else load_lm(args.proposal, chat=target.prior.chat_spec, **models_from(args)))
    if args.mask:
        proposal = masked_proposal(target, proposal)
    if args.tradeoff is not None:
        return _tradeoff(args, samplers.tradeoff(target, proposal, floats("--tradeoff", args.tradeoff) or None,
                                                 n=args.n, seed=args.seed))
    try:
        # Samples go to a side file renamed over --out only on success: a failed run leaves an old file intact.
        out = open(args.out + ".partial", "w", encoding="utf-8") if args.out else sys.stdout
    except OSError as error:
        raise ConfigError(f"--out: cannot write {args.out}: {error.strerror}") from None
    try:
        draws = api.sample(target, sampler, n=args.n, proposal=proposal, seed=args.seed)
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


def _tradeoff(args, rows) -> int:
    if args.json:
        print(json.dumps({"tradeoff": [row.to_json() for row in rows]}, indent=2))
        return 0
    print(f"{'beta':>10s}" + "".join(f" {h:>16s}" for h in ("acceptance", "TV(p_β,π*)", "KL(π*‖p_β)", "KL(p_β‖π*)")))
    for row in rows:
        print(f"{row.beta:10.4g} " + " ".join(f"{e.value:8.4f} ± {e.stderr:5.4f}" for e in (
            row.acceptance_rate, row.tv_qrs_target, row.kl_target_qrs, row.kl_qrs_target)))
    return 0
