"""Where each training step's figures go besides metrics.jsonl: the experiment trackers TRL users know, named in
the config's `report_to` (each an optional package), and callbacks from Python.

Every tracker stays on this machine unless its user says otherwise: TensorBoard writes RUN/tensorboard;
Weights & Biases runs offline into RUN/wandb (WANDB_MODE=online to upload; `wandb sync` later); MLflow logs to
the file store RUN/mlruns unless MLFLOW_TRACKING_URI names a server; trackio keeps its local database (its own
TRACKIO_DIR). Each receives the resolved config once and every step's numeric figures.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
from pathlib import Path
from typing import Callable

from bayeslm.config import ConfigError

# name: the package it needs
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


def check(names: list[str]) -> str | None:
    """Why `report_to` cannot be used as given (an unknown tracker, or its package missing), else None."""
    for name in names:
        if name not in PACKAGES:
            return f"unknown tracker {name!r}; expected some of {sorted(PACKAGES)}"
        if importlib.util.find_spec(PACKAGES[name]) is None:
            return f"{name} is not installed: pip install {PACKAGES[name]} (or drop it from report_to)"
    return None


def require_directory(names: list[str], run_dir: Path | None):
    """Trackers write into the run directory: refuses `report_to` without one."""
    if names and run_dir is None:
        raise ConfigError(f"report_to {names} needs a run directory: give out (--out)")


def check_callbacks(callbacks: list[Callable]):
    """Refuses, before training, a callback that cannot be called as `f(record, trainer)`."""
    for callback in callbacks:
        try:
            inspect.signature(callback).bind(None, None)
        except TypeError:
            raise TypeError(f"callback {callback!r} cannot be called as f(record, trainer): a callback gets every "
                            "step's figures and the Trainer (add a second parameter)") from None
        except ValueError:  # a builtin without a signature: it says so when called
            pass


class Trackers:
    """The trackers of one run (rank 0 only), and the callbacks: each `callback(record, trainer)` gets every step's
    figures and the `Trainer`, and may return True to end training after that step (the model is saved and scored
    as at the last step). Callbacks run on rank 0 alone, so they must not call a collective (`state_dict` of a
    sharded run)."""

    def __init__(self, names: list[str], run_dir: Path | None, config: dict, callbacks: list[Callable] = ()):
        require_directory(names, run_dir)
        self.callbacks = list(callbacks)
        self.trackers = [_OPEN[name](run_dir, config) for name in names]

    def log(self, record: dict, trainer) -> bool:
        """Sends the step's figures everywhere; True when a callback asked to stop."""
        numbers = {k: float(v) for k, v in record.items()
                   if isinstance(v, (int, float)) and k != "step" and math.isfinite(v)}
        for tracker in self.trackers:
            tracker.log(numbers, record["step"])
        return any([bool(callback(dict(record), trainer)) for callback in self.callbacks])

    def close(self):
        for tracker in self.trackers:
            tracker.close()


class _TensorBoard:
    def __init__(self, run_dir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self.writer.add_text("config", f"```\n{config}\n```")

    def log(self, numbers, step):
        for key, value in numbers.items():
            self.writer.add_scalar(key, value, step)

    def close(self):
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, config: dict):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "bayeslm"), name=run_dir.name,
                              dir=str(run_dir), config=config, mode=os.environ.get("WANDB_MODE", "offline"))

    def log(self, numbers, step):
        self.run.log(numbers, step=step)

    def close(self):
        self.run.finish()


class _MLflow:
    def __init__(self, run_dir: Path, config: dict):
        import mlflow

        self.mlflow = mlflow
        if "MLFLOW_TRACKING_URI" not in os.environ:
            # The file store needs no database package (mlflow-skinny has none); MLflow 3 keeps it working but
            # refuses it unless asked: asking is what choosing it here means.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "bayeslm"))
        mlflow.start_run(run_name=run_dir.name)
        mlflow.log_params(_flat(config))

    def log(self, numbers, step):
        self.mlflow.log_metrics(numbers, step=step)

    def close(self):
        self.mlflow.end_run()


class _Trackio:
    def __init__(self, run_dir: Path, config: dict):
        import trackio

        self.trackio = trackio
        trackio.init(project=os.environ.get("TRACKIO_PROJECT", "bayeslm"), name=run_dir.name, config=config)

    def log(self, numbers, step):
        self.trackio.log(numbers, step=step)

    def close(self):
        self.trackio.finish()


_OPEN = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow, "trackio": _Trackio}


def _flat(config: dict, prefix: str = "") -> dict:
    """A nested config as flat `a.b` keys with string values (MLflow parameters are strings of ≤ 6000 chars)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:6000]
    return out
