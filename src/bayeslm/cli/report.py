"""`bayeslm report`: a run's self-contained HTML report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bayeslm.cli.common import subparser

EXAMPLE = """example:
  bayeslm report runs/klrl                 # writes runs/klrl/report.html
  bayeslm report runs/klrl --out klrl.html --json"""


def add(sub, parents):
    parser = subparser(sub, "report", parents, "write a run's self-contained HTML report (scorecards, curves, "
                                               "samples)", EXAMPLE)
    parser.add_argument("run_dir", help="a run directory written by `bayeslm train --out`")
    parser.add_argument("--out", help="where to write the HTML (default RUN_DIR/report.html)")
    parser.add_argument("--json", action="store_true", help="print the report's path and warnings as JSON")
    parser.set_defaults(run=run, preflight=preflight)
    return parser


def preflight(args):
    """--out replaces no file of a run (but the run's own report.html), checked before torch."""
    from bayeslm.outputs import refuse_to_replace

    run_dir = Path(args.run_dir)
    if args.out:
        refuse_to_replace(Path(args.out), [run_dir], owned=run_dir / "report.html")


def run(args) -> int:
    from bayeslm.measurement.report import write_report

    out, warnings = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    if args.json:
        print(json.dumps({"report": str(out), "collapse_warnings": warnings}, indent=2))
        return 0
    for warning in warnings:
        print(f"bayeslm: warning: distribution collapse: {warning}", file=sys.stderr)
    print(f"report written to {out} (open it in a browser: file://{out.resolve()})")
    return 0
