"""Issue 22: how long a mistake in a target file or a training config takes to be reported, against what the
start of a command costs once torch is imported.

    .venv/bin/python bench/startup.py [--repeats 5] [--json FILE]

Each case is a fresh `bayeslm` process (the wall time a user waits, interpreter start included), median of
--repeats runs:
  target typo     evaluate / sample / plan with `betta:` for `beta:` in the target file
  config typo     train with `stpes:` for `steps:` in the training config
  import torch    `python -c "import torch"`: the floor of any command that loads a model
  toy evaluate    a whole `evaluate` of the toy target with 4 samples: what a correct command costs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import yaml  # noqa: E402

BAYESLM = [sys.executable, "-m", "bayeslm"]


def timed(command: list[str], repeats: int, exit_code: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        times.append(time.perf_counter() - start)
        if done.returncode != exit_code:
            raise SystemExit(f"{command} exited {done.returncode}, not {exit_code}: {done.stderr[-500:]}")
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(json.dumps(common.machine()))
    examples = common.ROOT / "examples"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        target = yaml.safe_load((examples / "toy_sentiment.yaml").read_text())
        target["potentials"][0]["exponential"]["betta"] = target["potentials"][0]["exponential"].pop("beta")
        (tmp / "typo.yaml").write_text(yaml.safe_dump(target))
        config = yaml.safe_load((examples / "train_toy_klrl.yaml").read_text())
        config["target"] = str(examples / config["target"])
        config["stpes"] = config.pop("steps")
        (tmp / "config.yaml").write_text(yaml.safe_dump(config))
        cases = {
            "target typo: evaluate": (BAYESLM + ["evaluate", "--target", str(tmp / "typo.yaml")], 2),
            "target typo: sample": (BAYESLM + ["sample", "--target", str(tmp / "typo.yaml"), "--method", "smc"], 2),
            "target typo: plan": (BAYESLM + ["plan", "--target", str(tmp / "typo.yaml")], 2),
            "config typo: train": (BAYESLM + ["train", str(tmp / "config.yaml"), "--out", str(tmp / "run")], 2),
            "import torch": ([sys.executable, "-c", "import torch"], 0),
            "toy evaluate, whole": (BAYESLM + ["evaluate", "--target", str(examples / "toy_sentiment.yaml"),
                                               "-n", "4", "--quiet"], 0),
        }
        seconds = {name: timed(command, args.repeats, code) for name, (command, code) in cases.items()}
    floor = seconds["import torch"]
    for name, value in seconds.items():
        print(f"{name:24s} {value:6.3f} s   {value / floor:5.2f}× import torch")
    if args.json:
        args.json.write_text(json.dumps({"settings": {"repeats": args.repeats}, "seconds": seconds,
                                         "machine": common.machine()}, indent=2))


if __name__ == "__main__":
    main()
