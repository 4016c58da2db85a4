"""`bayeslm reproduce`: the claims of KL-RL as Bayesian inference on exact toy numbers (see
`bayeslm.experiments.reproduce`)."""

from __future__ import annotations

import json

from bayeslm.cli.common import positive_int, subparser


def add(sub, parents):
    parser = subparser(sub, "reproduce", parents, "show the KL-RL-as-inference claims on exact toy numbers",
                       "example:\n  bayeslm reproduce --figure curves.png")
    parser.add_argument("--steps", type=positive_int, default=300, help="training steps per method")
    parser.add_argument("--bimodal-steps", type=positive_int, default=150)
    parser.add_argument("--figure", help="write the training curves to this PNG")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)
    return parser


def run(args) -> int:
    from bayeslm.experiments.reproduce import reproduce

    report = reproduce(steps=args.steps, bimodal_steps=args.bimodal_steps, figure=args.figure,
                       device=args.device or args.env_device or "auto")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if all(report["claims"].values()) else 1
    print(f"{'method':10s} {'KL(π‖π*)':>10s} {'KL(π*‖π)':>10s} {'entropy':>9s} {'prior H':>9s} {'reward':>8s} "
          f"{'KL(π‖π0)':>9s} {'|Δ log Z|':>10s}")
    for name, m in report["methods"].items():
        learned = f"{m['log_z_error']:10.4f}" if "log_z_error" in m else f"{'':10s}"  # tb's learned log Z
        print(f"{name:10s} {m['kl_model_target']:10.4f} {m['kl_target_model']:10.4f} {m['entropy']:9.4f} "
              f"{m['prior_entropy']:9.4f} {m['reward_mean']:8.4f} {m['kl_model_prior']:9.4f} {learned}")
    mass = report["bimodal"]["mass"]
    print(f"\nbimodal target, mass on {report['bimodal']['modes']}: target {_pair(mass['target'])}, "
          f"reverse KL (klrl) {_pair(mass['klrl'])}, forward KL (dpg) {_pair(mass['dpg'])}")
    print(f"max |J_KLRL − β(log Z − KL(π‖π*))| over all steps: {report['identity_error']:.2e}\n")
    for claim, holds in report["claims"].items():
        print(f"  [{'ok' if holds else 'FAILED'}] {claim.replace('_', ' ')}")
    if args.figure:
        print(f"\ncurves: {args.figure}")
    return 0 if all(report["claims"].values()) else 1


def _pair(values) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"
