import json
import os
from pathlib import Path

import pytest
import scipy.stats
import torch
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


def chi_square_p(continuations, probabilities, sequences) -> float:
    """p-value of Pearson's χ² test that the continuations are independent draws from `probabilities` over
    `sequences`; cells expected to hold fewer than 5 draws are pooled into one."""
    index = {tuple(s): i for i, s in enumerate(sequences)}
    counts = torch.bincount(torch.tensor([index[tuple(c)] for c in continuations]),
                            minlength=len(sequences)).double()
    expected = probabilities * len(continuations)
    small = expected < 5
    observed = torch.cat([counts[~small], counts[small].sum()[None]])
    expected = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = expected > 0
    if (observed[~keep] > 0).any():
        return 0.0  # a draw where the law puts no mass at all
    return scipy.stats.chisquare(observed[keep], expected[keep] * observed.sum() / expected[keep].sum()).pvalue


def rows_of(draws, c):
    return [x for x, i in zip(draws.samples.continuations, draws.samples.prompt_index.tolist()) if i == c]
