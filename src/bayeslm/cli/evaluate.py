"""`bayeslm evaluate`: the scorecard of a model against a target, with exact values on toy priors."""

from __future__ import annotations

import json
import math
import sys

from bayeslm.cli.common import masked_proposal, models_from, positive_int, preflight_target, seed_int, subparser

SHOWN_PROMPTS = 3  # prompts shown templated in the text output (--json has all)

EXAMPLE = """example:
  bayeslm evaluate --target examples/toy_sentiment.yaml -n 512 --exact
  bayeslm evaluate --target examples/toy_sentiment.yaml --model runs/toy/model --certify --reward-max 1
  bayeslm evaluate --target examples/positive_sentiment.yaml --model runs/my-run/model --json
  bayeslm evaluate --target examples/toy_regex.yaml --mask --exact
  bayeslm evaluate --target examples/power_multiples.yaml --verifier multiples -n 64"""


def add(sub, parents):
    parser = subparser(sub, "evaluate", parents, "score a model against a target (the Bayesian scorecard)", EXAMPLE)
    parser.add_argument("--target", required=True, help="target file (YAML)")
    parser.add_argument("--model", help="model to evaluate: a local model directory, 'default' or 'toy' "
                                        "(default: the target's prior)")
    parser.add_argument("--mask", action="store_true",
                        help="evaluate the model masked to the target's regex, grammar and json_schema languages "
                             "(locally constrained decoding): how far it is from the target")
    parser.add_argument("-n", type=positive_int, default=256, help="samples per prompt (default 256)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--exact", action="store_true", help="also compute exact values by enumeration "
                                                             "(toy priors only)")
    parser.add_argument("--reference", type=positive_int, default=1024, metavar="N",
                        help="samples per prompt of the prior for the target's reference: log Z and π*'s samples, "
                             "which log Z, KL(q‖π*), KL(π*‖q) and the figures under π* are measured against "
                             "(default 1024)")
    parser.add_argument("--reference-source", choices=["auto", "prior", "exact"], default="auto",
                        help="where the reference comes from: the prior's samples, or enumeration (toy priors); "
                             "auto (the default) enumerates where the space is small enough")
    parser.add_argument("--certify", action="store_true",
                        help="also bound log Z from both sides with exact samples of the target (rejection from the "
                             "prior; needs a known bound: constraints, or --reward-max for a bounded reward)")
    parser.add_argument("--reward-max", type=float, help="with --certify: the largest value the reward can take, so "
                                                         "that M = exp(reward_max/β)")
    parser.add_argument("--log-bound", type=float, help="with --certify: log M, with M ≥ max P(x)/π0(x)")
    parser.add_argument("--verifier", metavar="REWARD",
                        help="judge each sample correct where this reward is not zero (a reward as a target file "
                             "writes it: multiples, '{keyword: [good]}', package.module:function), for pass@k and "
                             "distinct correct answers; by default the target's own hard constraints judge, where it "
                             "has any")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run, preflight=preflight_target)
    return parser


def run(args) -> int:
    """Launched as several processes (torchrun), each draws and scores its share of every prompt's samples."""
    import yaml

    from bayeslm.distributions.loading import load_lm
    from bayeslm.measurement.evaluation import pooled, target_reference
    from bayeslm.measurement.reference import REFERENCE_SEED
    from bayeslm.measurement.scorecard import card
    from bayeslm.modelling.potentials.language import explained
    from bayeslm.modelling.rewards import from_spec
    from bayeslm.modelling.target_file import load_target
    from bayeslm.parallel import distributed
    from bayeslm.weights import NoSupport

    with distributed.joined() as world:  # first: it picks this process's GPU
        target = load_target(args.target, **models_from(args))
        verifier = None if args.verifier is None else from_spec(yaml.safe_load(args.verifier), "--verifier")
        log_bound = _certifiable(args, target)  # before any sampling: a bound that is not known fails fast
        model = target.prior if args.model is None else load_lm(args.model, chat=target.prior.chat_spec,
                                                                **models_from(args))
        if args.mask:
            model = masked_proposal(target, model)
        exact = None
        if args.exact:  # enumerate first: a target too large to enumerate fails before sampling
            from bayeslm.measurement.exact import Exact

            exact = world.on_main(Exact, target)
        samples = pooled(model, target, args.n, seed=args.seed, world=world)
        ref = target_reference(target, args.reference, seed=args.seed + REFERENCE_SEED, source=args.reference_source,
                               world=world)
        certificate = world.on_main(_certificate, model, target, samples, log_bound, args) if args.certify else None
    if not world.main:
        return 0
    try:
        result = card(samples, target, reference=ref, model=model, verifier=verifier)
    except NoSupport as error:
        raise explained(error, target, args.seed) from None
    if exact is not None:
        result.exact = exact.scorecard(model, verifier=verifier, ks=list(result.pass_at_k))
        if certificate is not None:
            certificate.exact = {"log_z": result.exact["log_z"],
                                 "jeffreys": result.exact["kl_model_target"] + result.exact["kl_target_model"]}
    _show(result, certificate, target, args)
    return 0


def _show(result, certificate, target, args):
    """The scorecard (and certificate) as a table or JSON on stdout; unreliable figures named on stderr."""
    from bayeslm.modelling.potentials.base import factors

    rendered = target.prior.render(target.prompts)  # what the model is actually given: the template's work shows
    best = [kl for f in factors(target.potential) if (kl := f.kl_to_prior()) is not None]  # best_of targets
    if args.json:
        document = result.to_json()
        document["prompts_as_seen"] = rendered
        if best:
            document["best_of"] = best
        if certificate is not None:
            document["certified"] = certificate.to_json()
        print(json.dumps(document, indent=2))
    else:
        print(result)
        if certificate is not None:
            print(f"\n{certificate}")
        shown = ", ".join(repr(text) for text in rendered[:SHOWN_PROMPTS])
        more = f" and {len(rendered) - SHOWN_PROMPTS} more" if len(rendered) > SHOWN_PROMPTS else ""
        print(f"\nprompts as the model sees them: {shown}{more}")
        for b in best:
            print(f"best of {b['n']}: KL(π_BoN‖π0) = {b['kl_to_prior']:.4f} (exact from the prior's reward CDF, mean "
                  f"over prompts) ≤ log n − (n−1)/n = {b['bound']:.4f}, gap {b['gap']:.4f}")
    reasons = sorted({e.unreliable for e in result.estimates.values() if e.unreliable})
    for reason in reasons:
        print(f"bayeslm: warning: unreliable estimates: {reason}", file=sys.stderr)


def _certifiable(args, target) -> float | None:
    """log M for --certify: --log-bound, or the bound that follows from the target (and --reward-max)."""
    from bayeslm.config import ConfigError
    from bayeslm.samplers.rejection import NoBound, known_log_bound

    if not args.certify:
        if args.reward_max is not None or args.log_bound is not None:
            raise ConfigError("--reward-max and --log-bound go with --certify")
        return None
    if args.log_bound is not None:
        if not math.isfinite(args.log_bound):
            raise ConfigError(f"--log-bound: expected a finite number (log M), got {args.log_bound}")
        return args.log_bound
    try:
        return known_log_bound(target, reward_max=args.reward_max)
    except NoBound as error:
        raise ConfigError(f"--certify: {error}") from None


def _certificate(model, target, samples, log_bound, args):
    from bayeslm.measurement.certify import certify

    return certify(model, target, args.n, log_bound=log_bound, seed=args.seed, samples=samples)
