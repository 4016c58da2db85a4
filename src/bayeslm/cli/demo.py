"""`bayeslm demo`: the main job end to end on the embedded prior (see `bayeslm.experiments.demo`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bayeslm.cli.common import seed_int, subparser

EXAMPLE = """example:
  bayeslm demo --quick                      # a first look, under 3 minutes on 2 CPU cores
  bayeslm demo --out runs/demo --overwrite  # the full demo (what `make demo` runs), under 15 minutes"""

def add(sub, parents):
    parser = subparser(sub, "demo", parents, "the main job on the embedded prior: plan β, train KL-RL + LoRA, "
                                             "evaluate, report", EXAMPLE)
    parser.add_argument("--quick", action="store_true", help="a smaller budget for a first look (under 3 minutes)")
    parser.add_argument("--out", help="run directory (default runs/demo, or runs/demo-quick with --quick)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)
    return parser


def run(args) -> int:
    from bayeslm.experiments.demo import run_demo, table

    summary = run_demo(Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo")), quick=args.quick,
                       overwrite=args.overwrite, quiet=args.quiet, seed=args.seed,
                       device=args.device or args.env_device, decoding=args.decoding or args.env_decoding)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for warning in summary["collapse_warnings"]:
        print(f"bayeslm: warning: distribution collapse: {warning}", file=sys.stderr)
    print(f"target π* ∝ π0·exp(sentiment/β), β = {summary['beta']:.4g} (planned from prior samples)\n")
    print(table(summary))
    print(f"\nreport: {Path(summary['report']).resolve()}  (open it in a browser)")
    return 0
