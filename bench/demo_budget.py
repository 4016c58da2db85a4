"""The demo's budget, chosen on seeds the demo does not report: `bayeslm demo` (KL-RL + LoRA on SmolLM2 towards
π* ∝ π0·exp(VADER/β)) run with a candidate budget, each figure measured against the target's reference, with the
wall time. The demo itself runs seed 0; settings are tried here on seeds 1 and up.

    .venv/bin/python bench/demo_budget.py --seed 1 --steps 30 --lr 1e-3 --json bench/results/demo_budget.json

Each call appends one record (command, commit, date, machine, load, the budget, the demo's table, seconds) to the
--json file, so the tries accumulate in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine

from bayeslm.experiments.demo import FULL, run_demo, table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True, help="not 0: the demo's own seed is never tuned on")
    for f in dataclasses.fields(FULL):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(FULL, f.name)),
                            default=getattr(FULL, f.name))
    parser.add_argument("--json", type=Path, help="append the record to this JSON list")
    args = parser.parse_args()
    if args.seed == 0:
        parser.error("--seed 0 is the demo's own: choose the budget on other seeds")
    budget = dataclasses.replace(FULL, **{f.name: getattr(args, f.name) for f in dataclasses.fields(FULL)})
    load = Path("/proc/loadavg").read_text().split()[:3]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_demo(Path(tmp) / "demo", budget=budget, seed=args.seed, quiet=True)
    seconds = time.perf_counter() - started
    shown = table(summary)
    print(f"seed {args.seed}, {budget}, {seconds:.0f} s\n{shown}")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        record = {"command": " ".join(["bench/demo_budget.py", *sys.argv[1:]]), "commit": commit,
                  "date": datetime.date.today().isoformat(), "machine": machine(), "load_before": load,
                  "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "seed": args.seed,
                  "budget": dataclasses.asdict(budget), "seconds": seconds, "beta": summary["beta"],
                  "verdict": summary["verdict"], "figures": summary["figures"], "table": shown}
        records = json.loads(args.json.read_text()) if args.json.is_file() else []
        args.json.write_text(json.dumps(records + [record], indent=1))


if __name__ == "__main__":
    main()
