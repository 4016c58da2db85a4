"""Nothing lost: a killed run resumes bit-for-bit, a full disk or a corrupt file never costs the last good
checkpoint, and a diverging run stops naming its step."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PROMPTS
from safetensors.torch import load_file

from bayeslm.cli import main
from bayeslm.config import load
from bayeslm.distributions.loading import load_lm
from bayeslm.training import checkpoint
from bayeslm.training.config import TrainConfig
from bayeslm.training.run import train

TOY_TARGET = {"prior": {"toy": {"seed": 0, "train_steps": 0}}, "prompts": PROMPTS, "max_new_tokens": 3,
              "potentials": [{"exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5}}]}
TIMING = {"samples_per_s", "tokens_per_s", "sample_seconds", "step_seconds"}


def settings(**changes) -> dict:
    return {"target": TOY_TARGET, "objective": "klrl", "steps": 4, "prompts_per_step": 2, "samples_per_prompt": 4,
            "lr": 3e-3, "eval_n": 0, "checkpoint_every": 2, **changes}


def write_config(tmp_path, data) -> str:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def one_thread(monkeypatch):
    """One thread here and in the processes started from here: bit for bit needs one thread count on both sides,
    and this process may hold another, chosen for the models of earlier tests."""
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_to_the_same_weights_and_metrics(tmp_path, capsys, one_thread):
    # klrl with an adaptive β: the objective's state must come back too.
    data = settings(steps=12, checkpoint_every=2, objective={"klrl": {"kl_budget": 0.02}})
    train(load(TrainConfig, data), tmp_path / "straight", quiet=True)
    config, killed = write_config(tmp_path, data), tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "bayeslm", "train", config, "--out", str(killed), "--quiet"],
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not checkpoint.completed(killed / "checkpoints") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)  # no handler, no cleanup: as an OOM kill or a lost node
    process.wait()
    process.stderr.close()
    assert len(metrics(killed)) < 12
    # What a kill in the middle of a save or of a metrics line leaves behind.
    leftover = killed / "checkpoints" / ".writing-abc123"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"\0" * 10)
    with (killed / "metrics.jsonl").open("a") as f:
        f.write('{"reward_mean": 0.1, "lo')

    assert main(["train", config, "--out", str(killed), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().err
    assert not leftover.exists()
    assert metrics(killed) == metrics(tmp_path / "straight")  # every figure, bit for bit
    straight_w, killed_w = (load_file(run / "model" / "model.safetensors") for run in (tmp_path / "straight", killed))
    assert straight_w.keys() == killed_w.keys() and all(torch.equal(straight_w[k], killed_w[k]) for k in straight_w)


def test_a_full_disk_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    config, run = write_config(tmp_path, settings()), tmp_path / "run"
    real_save_file, calls = checkpoint.save_file, []

    def disk_fills_during_the_second_checkpoint(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"\0" * 100)  # half a file, then no space left
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", disk_fills_during_the_second_checkpoint)
    assert main(["train", config, "--out", str(run), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cannot write checkpoint" in err and "step-000004" in err and "No space left on device" in err
    assert "last good checkpoint is" in err and "step-000002" in err
    assert [p.name for p in checkpoint.completed(run / "checkpoints")] == ["step-000002"]
    assert not list((run / "checkpoints").glob(".writing-*"))  # the partial copy is gone
    assert checkpoint.load_latest(run / "checkpoints")[1]["state"]["step"] == 2
    assert not (run / "model").exists()

    monkeypatch.setattr(checkpoint, "save_file", real_save_file)  # space freed: the run resumes and completes
    assert main(["train", config, "--out", str(run), "--resume", "--quiet"]) == 0
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4]


def test_a_truncated_safetensors_file_falls_back_to_the_previous_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    train(load(TrainConfig, settings()), run, quiet=True)
    latest = checkpoint.completed(run / "checkpoints")[-1]
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    path, saved = checkpoint.load_latest(run / "checkpoints")
    assert path.name == "step-000002" and saved["state"]["step"] == 2
    err = capsys.readouterr().err
    assert "step-000004" in err and "unreadable" in err and "trying an older one" in err
    (path / "state.json").write_text("{")  # now every checkpoint is corrupt: an error, never a silent restart
    with pytest.raises(checkpoint.CorruptCheckpoint, match="none of the 2 checkpoint"):
        train(load(TrainConfig, settings()), run, resume=True, quiet=True)
    assert len(metrics(run)) == 4  # nothing was discarded


def test_a_checkpoint_from_before_a_config_field_existed_resumes_with_its_default(tmp_path):
    run = tmp_path / "run"
    train(load(TrainConfig, settings(steps=2)), run, quiet=True)
    state_file = checkpoint.completed(run / "checkpoints")[-1] / "state.json"
    state = json.loads(state_file.read_text())
    del state["config"]["sharding"]  # as written before `sharding` was added
    state_file.write_text(json.dumps(state))
    train(load(TrainConfig, settings(steps=4)), run, resume=True, quiet=True)
    assert len(metrics(run)) == 4
    with pytest.raises(Exception, match=r"\['lr'\] changed since the checkpoint"):
        train(load(TrainConfig, settings(steps=6, lr=1e-2)), run, resume=True, quiet=True)


def test_a_diverging_run_exits_1_naming_the_step_and_the_last_good_checkpoint(tmp_path, capsys):
    # lr 1e30: the first update makes the weights huge, the second step's log-probabilities NaN.
    config = write_config(tmp_path, settings(objective={"dpg": {"proposal": "prior"}}, lr=1e30,
                                             checkpoint_every=1))
    assert main(["train", config, "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "step 2: the loss (nan)" in err and "last good checkpoint is" in err and "step-000001" in err
    assert [p.name for p in checkpoint.completed(tmp_path / "run" / "checkpoints")] == ["step-000001"]


def test_checkpoints_sort_by_step_number_past_a_million(tmp_path):
    for step in (999_999, 1_000_000, 2, 10):
        (tmp_path / f"step-{step:06d}").mkdir()
        (tmp_path / f"step-{step:06d}" / checkpoint.COMPLETE).write_text("{}")
    (tmp_path / "step-notes").mkdir()
    assert [p.name for p in checkpoint.completed(tmp_path)] == [
        "step-000002", "step-000010", "step-999999", "step-1000000"]


def test_only_tied_weights_may_be_missing_from_a_full_state():
    model = load_lm({"toy": {"seed": 0}}).model
    state = checkpoint.trainable_state(model)
    assert "lm_head.weight" not in state  # tied to the input embedding: saved once
    checkpoint.load_trainable_state(model, state)
    with pytest.raises(checkpoint.CorruptCheckpoint, match="missing.*transformer.h.0.attn.c_attn.weight"):
        checkpoint.load_trainable_state(model, {k: v for k, v in state.items()
                                                if k != "transformer.h.0.attn.c_attn.weight"})
    with pytest.raises(checkpoint.CorruptCheckpoint, match="unexpected.*'extra.weight'"):
        checkpoint.load_trainable_state(model, {**state, "extra.weight": torch.zeros(1)})
