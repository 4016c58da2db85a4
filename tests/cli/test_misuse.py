"""A corpus of misuses an adversarial new user tried: each stops with the right exit code and a first line that says
what was wrong, prints no traceback, and leaves every file that existed before byte for byte as it was.

Class 1: outputs never replace what the user keeps (a directory bayeslm did not make, an input, a file of a run).
Class 2: a run never saves, and bayeslm never samples from, a model with NaN or infinite weights.
Class 3: a config or target file names only what its author declared for bayeslm, never the standard library or
an installed package's arbitrary callable.
Classes 4 to 7: malformed YAML, damaged run directories, silent or wrong answers."""

from pathlib import Path

import pytest
import torch
from conftest import run, snapshot, write

from bayeslm.cli import main
from bayeslm.distributions.loading import load_lm

TOY = {"toy": {"seed": 0}}
LENGTH = [{"exponential": {"reward": "length", "beta": 1}}]


@pytest.fixture(autouse=True)
def fixtures_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))


def target(directory: Path, name="target.yaml", potentials=LENGTH) -> str:
    return write(directory / name, {"prior": TOY, "prompts": ["the"], "max_new_tokens": 3, "potentials": potentials})


def config(directory: Path, name="train.yaml", **fields) -> str:
    target(directory)
    data = {"target": "target.yaml", "objective": "klrl", "steps": 1, "prompts_per_step": 1,
            "samples_per_prompt": 2, "eval_n": 0, **fields}
    return write(directory / name, data)


def a_run(directory: Path) -> Path:
    """A finished run of one step, made by `bayeslm train`."""
    assert main([str(a) for a in ("train", config(directory), "--out", directory / "run", "--quiet")]) == 0
    return directory / "run"


def project(directory: Path) -> Path:
    """A user's project directory: their config, target and notes, and the samples the README's `sample` wrote."""
    config(directory)
    (directory / "notes.txt").write_text("my notes")
    (directory / "samples.jsonl").write_text('{"text": "kept"}\n')
    return directory


def nan_model(directory: Path) -> Path:
    """A model directory whose weights diverged (one NaN), as an unchecked run would have saved it."""
    lm = load_lm(TOY)
    with torch.no_grad():
        next(lm.model.parameters()).view(-1)[0] = float("nan")
    lm.model.save_pretrained(directory / "nan", safe_serialization=True)
    lm.tokenizer.save_pretrained(directory / "nan")
    return directory / "nan"


# Each case: (set-up returning the command's arguments, exit code, the first line's words).
CASES = {
    # class 1: outputs that would replace what the user keeps
    "overwrite a project directory": (
        lambda d: ["train", config(project(d)), "--out", d, "--overwrite"], 2, "is not empty"),
    "train --out . in a project": (
        lambda d: ["train", config(project(d)), "--out", "."], 2, "is not empty"),
    "sample --out the target file": (
        lambda d: ["sample", "--target", target(d), "--method", "ancestral", "-n", 2, "--out", d / "target.yaml"],
        2, "is also an input of this command"),
    "report --out a file of the run": (
        lambda d: ["report", a_run(d), "--out", d / "run" / "metrics.jsonl"], 2, "is part of the run"),
    "sample --out into a run": (
        lambda d: ["sample", "--target", target(d), "--method", "ancestral", "-n", 2,
                   "--out", a_run(d) / "samples.jsonl"], 2, "is part of the run"),
    "a run that kept only model/ and checkpoints/": (
        lambda d: ["train", config(d), "--out", _strip(a_run(d), "config.yaml", "metrics.jsonl")],
        2, "already holds a run"),
    "overwrite a run holding a file of the user's": (
        lambda d: ["train", config(d), "--out", _add(a_run(d), "notes.txt"), "--overwrite"],
        2, "also holds files bayeslm did not write"),
    "train --out under a file": (
        lambda d: ["train", config(project(d)), "--out", d / "notes.txt" / "run"], 2, "is a file"),
    "report --out a directory": (
        lambda d: ["report", a_run(d), "--out", d], 2, "is a directory"),
    "report --out in a missing directory": (
        lambda d: ["report", a_run(d), "--out", d / "missing" / "r.html"], 2, "does not exist"),
    "guard --model into a project directory": (
        lambda d: ["guard", config(project(d)), "--model", "x", "--out", d], 2, "is not empty"),
    # class 2: a model with non-finite weights is neither saved nor sampled from
    "a learning rate that overflows the weights": (
        lambda d: ["train", config(d), "--out", d / "run", "--set", "lr=1e308"], 1, "made some weights NaN"),
    "evaluate a model with NaN weights": (
        lambda d: ["evaluate", "--target", target(d), "--model", nan_model(d), "-n", 2], 2, "NaN or infinite weights"),
    # class 3: a file names only what was declared for bayeslm
    "a reward from the standard library": (
        lambda d: ["evaluate", "--target", target(d, potentials=[{"exponential": {"reward": "pty:spawn", "beta": 1}}]),
                   "-n", 2], 2, "is not a bayeslm reward"),
    "a reward function from the standard library": (
        lambda d: ["evaluate", "--target", target(d, potentials=[
            {"exponential": {"reward": {"function": "os:system"}, "beta": 1}}]), "-n", 2],
        2, "is not a bayeslm reward function"),
    "a constraint's predicate from an installed package": (
        lambda d: ["evaluate", "--target", target(d, potentials=[{"constraint": {"predicate": "numpy:sum"}}]),
                   "-n", 2], 2, "is not a bayeslm reward"),
    "a function of bayeslm's internals as a reward": (
        lambda d: ["evaluate", "--target", target(d, potentials=[
            {"exponential": {"reward": "bayeslm.registry:import_dotted", "beta": 1}}]), "-n", 2],
        2, "is not a bayeslm reward"),
    "an objective from the standard library": (
        lambda d: ["train", config(d, objective="os:system"), "--out", d / "run"], 2, "is not a bayeslm objective"),
    "a sampler from the standard library": (
        lambda d: ["sample", "--target", target(d), "--method", "os:system", "-n", 2], 2, "is not a bayeslm sampler"),
    "a sampler that is an objective": (
        lambda d: ["sample", "--target", target(d), "--method", "extension_fixtures:SelfNormalisedForwardKL", "-n", 2],
        2, "is not a bayeslm sampler"),
}


def _strip(run_dir: Path, *names) -> Path:
    for name in names:
        (run_dir / name).unlink()
    return run_dir


def _add(run_dir: Path, name: str) -> Path:
    (run_dir / name).write_text("the user's")
    return run_dir


def test_a_reward_of_ones_own_project_and_a_declared_sampler_still_run(tmp_path, capsys, monkeypatch):
    """The control of class 3: a reward function of the user's own project, and a declared sampler, still run."""
    monkeypatch.chdir(tmp_path)
    potentials = [{"exponential": {"reward": {"function": "reward_fixtures:constant"}, "beta": 1}}]
    code, _, err = run(capsys, "sample", "--target", target(tmp_path, potentials=potentials),
                       "--method", "extension_fixtures:Weighted", "-n", 2, "--quiet")
    assert code == 0, err


def test_overwrite_replaces_only_what_bayeslm_wrote(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = a_run(tmp_path)
    (run_dir / "report.html").write_text("an old report")
    code, _, err = run(capsys, "train", config(tmp_path, steps=2), "--out", run_dir, "--overwrite", "--quiet")
    assert code == 0, err
    assert not (run_dir / "report.html").exists() and (run_dir / "model").is_dir()
    assert (tmp_path / "train.yaml").is_file() and (tmp_path / "target.yaml").is_file()


# Classes 4 to 7: YAML, errors that need no model, raw tracebacks, silent or wrong.
MORE = {
    "a tab in the target file": (
        lambda d: ["evaluate", "--target", write(d / "t.yaml", "prior: {toy: {seed: 0}}\n\tprompts: [a]\n")],
        2, "not valid YAML at line 2"),
    "report on a run whose config is not a mapping": (
        lambda d: ["report", _config_text(a_run(d), "- just\n- a list\n")], 2, "not a run's config"),
    "report on a run whose config is empty": (
        lambda d: ["report", _config_text(a_run(d), "")], 2, "not a run's config"),
    "a prompts_file that is a directory but not a dataset": (
        lambda d: ["evaluate", "--target", _prompts_dir(d)], 2, "not a dataset saved with"),
    "more samples than memory holds": (
        lambda d: ["sample", "--target", target(d), "--method", "ancestral", "-n", 10**12], 2, "would hold about"),
    "chat: true on the toy prior": (
        lambda d: ["evaluate", "--target", write(d / "t.yaml", {"prior": TOY, "prompts": ["the"], "chat": True,
                                                               "potentials": LENGTH})], 2, "has no chat template"),
    "a seed beyond 64 bits": (
        lambda d: ["train", config(d, seed=10**23), "--out", d / "run"], 2, "seed: must be in [0, 2^63)"),
    "a log bound that is not a number": (
        lambda d: ["evaluate", "--target", target(d), "--certify", "--log-bound", "nan"], 2,
        "--log-bound: expected a finite number"),
}


def _config_text(run_dir: Path, text: str) -> Path:
    (run_dir / "config.yaml").write_text(text)
    return run_dir


def _prompts_dir(directory: Path) -> str:
    (directory / "prompts").mkdir()
    (directory / "prompts" / "a.txt").write_text("not a dataset")
    return write(directory / "t.yaml", {"prior": TOY, "prompts_file": "prompts", "max_new_tokens": 3,
                                        "potentials": LENGTH})


@pytest.mark.parametrize("case", {**CASES, **MORE})
def test_misuse_is_refused_and_touches_nothing(tmp_path, capsys, monkeypatch, case):
    setup, expected, words = {**CASES, **MORE}[case]
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path)
    capsys.readouterr()
    before = snapshot(tmp_path)
    code, out, err = run(capsys, *argv, "--quiet")
    first = err.strip().splitlines()[0] if err.strip() else ""
    assert code == expected, err
    assert first.startswith("bayeslm: error:") and words in first, first
    assert "Traceback" not in err
    after = snapshot(tmp_path)
    assert {name: after.get(name) for name in before} == before  # every file that was there, byte for byte


def test_a_string_given_as_the_prompts_is_refused_not_split_into_characters():
    target = bl_target()
    with pytest.raises(TypeError, match=r"given\(\['the movie'\]\)"):
        target.given("the movie")


def test_resuming_with_fewer_steps_than_done_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([str(a) for a in ("train", config(tmp_path, steps=3), "--out", tmp_path / "run", "--quiet")]) == 0
    before = snapshot(tmp_path / "run")
    code, _, err = run(capsys, "train", config(tmp_path, steps=2), "--out", tmp_path / "run", "--resume", "--quiet")
    assert code == 2 and "its checkpoint is at step 3 already" in err
    assert snapshot(tmp_path / "run") == before


def bl_target():
    from bayeslm.modelling.target_file import parse_target

    return parse_target({"prior": TOY, "prompts": ["the"], "max_new_tokens": 3, "potentials": LENGTH})


def test_sigterm_while_sampling_leaves_neither_a_partial_nor_an_output_file(tmp_path):
    """SIGTERM (a scheduler's stop) cleans up as Ctrl-C does: the side file goes, --out is never half written."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "samples.jsonl"
    command = [sys.executable, "-m", "bayeslm", "sample", "--target", target(tmp_path), "--method", "ancestral",
               "-n", "2000000", "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "samples.jsonl.partial"
    deadline = time.monotonic() + 120
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists(), "sampling ended before the signal could be sent"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == "bayeslm: terminated (SIGTERM)" and "Traceback" not in err
    assert not partial.exists() and not out.exists()
