import json
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bayeslm.cli import main  # noqa: E402
from bayeslm.config import load  # noqa: E402
from bayeslm.distributions.toy import ToyConfig, toy_lm  # noqa: E402
from bayeslm.modelling.rewards import Reward  # noqa: E402

PROMPTS = ["", "the movie"]
# A small training target on a toy prior, and a training config for it (what the training tests share).
TOY_TARGET = {"prior": {"toy": {"seed": 0, "train_steps": 50}}, "prompts": PROMPTS, "max_new_tokens": 3,
              "potentials": [{"exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5}}]}


def config(**settings):
    from bayeslm.training.config import TrainConfig

    return load(TrainConfig, {"target": TOY_TARGET, "steps": 4, "samples_per_prompt": 4, "lr": 3e-3,
                              "eval_n": 50, "checkpoint_every": 2, **settings})


def metrics(run_dir):
    """The metrics.jsonl records of a run."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def prior():
    """A toy prior trained away from uniform; small enough to enumerate at max_new_tokens=4."""
    return toy_lm(ToyConfig(seed=0, train_steps=200))


@pytest.fixture(scope="session")
def goodness():
    return Reward(lambda texts, prompts: [t.split().count("good") - t.split().count("bad") for t in texts],
                  "goodness")


def run(capsys, *argv):
    """`bayeslm ARGV` in this process: the exit code, stdout and stderr."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def write(path: Path, data) -> str:
    """Writes text, or data as YAML, to `path`; returns the path as a string."""
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def snapshot(directory: Path) -> dict:
    """Every file under a directory and its bytes: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
