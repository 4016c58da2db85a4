"""Every step's figures reach the trackers named in report_to (each offline, on disk) and Python callbacks; a
callback may end training early."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import TOY_TARGET, metrics

import bayeslm as bl
from bayeslm.config import ConfigError
from bayeslm.training.config import load_config

TRACKERS = ["tensorboard", "wandb", "mlflow", "trackio"]


def test_a_callback_sees_every_step_and_can_end_training_early(tmp_path):
    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 0}})
    target = (prior * bl.Exponential(bl.rewards.keyword(["good"]), beta=0.5)).given(["", "the movie"],
                                                                                    max_new_tokens=3)
    seen = []
    run = bl.train(target, "klrl", steps=10, lr=3e-3, eval_n=8, quiet=True, out=tmp_path / "run",
                   callbacks=[lambda record, trainer: seen.append((record, trainer.steps_done, trainer.model)),
                              lambda record, trainer: record["step"] == 3])
    assert [r["step"] for r, *_ in seen] == [1, 2, 3] == [r["step"] for r in metrics(tmp_path / "run")]
    assert [done for _, done, _ in seen] == [1, 2, 3] and all(model is run.model for *_, model in seen)
    assert run.scorecard is not None and (tmp_path / "run/model").is_dir()  # finished as if step 3 were the last
    assert (tmp_path / "run/checkpoints/step-000003").is_dir()


def test_a_callback_of_one_argument_is_refused_before_training():
    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 0}})
    target = (prior * bl.Exponential(bl.rewards.keyword(["good"]), beta=0.5)).given([""], max_new_tokens=2)
    with pytest.raises(TypeError, match=r"cannot be called as f\(record, trainer\)"):
        bl.train(target, steps=1, eval_n=0, quiet=True, callbacks=[lambda record: None])


def test_report_to_is_checked_with_the_config():
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        load_config({"target": TOY_TARGET, "report_to": ["comet"]})
    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 0}})
    target = (prior * bl.Exponential(bl.rewards.keyword(["good"]), beta=0.5)).given([""], max_new_tokens=2)
    with pytest.raises(ConfigError, match="needs a run directory"):
        bl.train(target, steps=1, eval_n=0, quiet=True, report_to=["tensorboard"])


@pytest.mark.slow
def test_every_tracker_receives_every_step_offline(tmp_path):
    for name in TRACKERS:
        pytest.importorskip(name)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"target": TOY_TARGET, "steps": 3, "eval_n": 8, "report_to": TRACKERS}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRACKIO_DIR": str(tmp_path / "trackio"), "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "bayeslm", "train", str(config), "--out", str(tmp_path / "run"),
                           "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    rewards = [r["reward_mean"] for r in metrics(run)]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("reward_mean")] == pytest.approx(rewards, rel=1e-6)

    offline = list((run / "wandb").glob("offline-run-*"))  # never uploaded: WANDB_MODE defaults to offline
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))

    import mlflow

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("bayeslm").experiment_id])
    history = client.get_metric_history(found.info.run_id, "reward_mean")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(rewards, rel=1e-6)
    assert found.data.params["steps"] == "3"

    check = ("from trackio.sqlite_storage import SQLiteStorage as S; import json; "
             "print(json.dumps([r['reward_mean'] for r in S.get_logs('bayeslm', 'run')]))")
    logged = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(logged.stdout.strip().splitlines()[-1]) == pytest.approx(rewards, rel=1e-6), logged.stderr
