"""The training config: every key, its type, default and meaning (`bayeslm train CONFIG.yaml --set key=value`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bayeslm.config import ConfigError, field, load, non_negative, positive, seed_range, to_dict
from bayeslm.modelling.prompts import PROMPT_KEYS
from bayeslm.training import trackers
from bayeslm.training.objectives import OBJECTIVES, Objective
from bayeslm.training.objectives.klrl import KLRL


def _at_least_two(value) -> str | None:
    return None if value >= 2 else "must be >= 2 (the leave-one-out baseline needs another sample of the prompt)"


def _eval_prompts(value) -> str | None:
    if value is None or isinstance(value, str) or (isinstance(value, list) and value
                                                   and all(isinstance(p, str) for p in value)):
        return None
    if isinstance(value, dict) and set(value) <= set(PROMPT_KEYS):
        return None
    return (f"expected a non-empty list of prompts, a file, or a mapping with the keys {list(PROMPT_KEYS)}; got "
            f"{value!r}")


def _device(value) -> str | None:
    from bayeslm.distributions.loading import resolve_device

    try:
        resolve_device(value)
    except ConfigError as error:
        return str(error).removeprefix("device: ")
    return None


@dataclass
class LoRA:
    """LoRA through peft: the prior's weights stay frozen (and, adapter off, are the prior itself)."""

    r: int = field(8, doc="rank of the LoRA update", check=positive)
    alpha: float = field(16.0, doc="LoRA scaling numerator (the update is scaled by alpha / r)", check=positive)
    target_modules: list[str] | None = field(None, doc="module names to adapt; null adapts every linear layer "
                                                       "but the output head")


@dataclass
class TrainConfig:
    target: str | dict | None = field(None, doc="a target file (path, relative to this config) or the target inline "
                                                "as a mapping; null when the target is given in Python")
    objective: str | dict | Objective = field(default_factory=KLRL,
                                              doc="what to minimise: an objective's name with its options, e.g. klrl "
                                                  "or {dpg: {proposal: adaptive}}, or the dotted path of your own "
                                                  "(package.module:Name); every objective's options are listed below",
                                              convert=OBJECTIVES.build, serialise=OBJECTIVES.spec)
    model: str | dict | None = field(None, doc="initial model: a local model directory (relative to this config), "
                                               "or {path: DIR, trust_remote_code: true} for one that ships its "
                                               "own code; null starts from the prior")
    steps: int = field(100, doc="optimiser steps", check=positive)
    prompts_per_step: int = field(8, doc="prompts drawn per micro-batch (cycling through the target's prompts)",
                                  check=positive)
    samples_per_prompt: int = field(4, doc="continuations per prompt per micro-batch", check=_at_least_two)
    grad_accum: int = field(1, doc="micro-batches per optimiser step", check=positive)
    lr: float = field(1e-4, doc="peak learning rate of AdamW", check=positive)
    weight_decay: float = field(0.0, doc="AdamW weight decay", check=non_negative)
    warmup_steps: int = field(0, doc="linear warm-up steps", check=non_negative)
    schedule: Literal["constant", "linear", "cosine"] = field("constant", doc="learning-rate decay after warm-up")
    max_grad_norm: float | None = field(1.0, doc="clip the gradient norm; null for no clipping", check=positive)
    precision: Literal["fp32", "bf16"] = field("fp32", doc="bf16: matrix products under bf16 autocast, fp32 "
                                                           "master weights and log-probabilities; faster only "
                                                           "where bf16 is native (GPUs, CPUs with AMX or "
                                                           "AVX512-BF16)")
    decoding: Literal["eager", "compiled"] = field(
        "eager", doc="how sampling runs, never what it draws: compiled decodes on a static KV cache with one "
                     "compiled graph per step (a CUDA graph on a GPU, where decoding is bound by kernel launches); "
                     "each new batch shape compiles once, tens of seconds. The CPU gains nothing from it")
    gradient_checkpointing: bool = field(False, doc="recompute each layer's activations in the backward pass "
                                                     "instead of keeping them: activation memory of about one layer "
                                                     "for about a third more compute, and each sample's scoring runs "
                                                     "its prompt again (transformers keeps no KV cache in recomputed "
                                                     "layers); the model must have no active dropout")
    lora: LoRA | None = field(None, doc="LoRA through peft; null for full fine-tuning")
    seed: int = field(0, doc="seeds sampling and initialisation; a run is reproducible from it", check=seed_range)
    checkpoint_every: int = field(50, doc="steps between checkpoints", check=positive)
    keep_checkpoints: int = field(2, doc="how many recent checkpoints to keep", check=positive)
    eval_n: int = field(64, doc="samples per prompt for the final scorecard; 0 skips it", check=non_negative)
    reference_n: int = field(1024, doc="samples per prompt of the prior for the target's reference (log Z and π*), "
                                       "which the final scorecards of the prior and the model are measured against",
                             check=positive)
    eval_prompts: list[str] | str | dict | None = field(
        None, doc="held-out prompts for the final scorecard (of the prior and the model) instead of the target's: a "
                  "list, a file (as prompts_file, relative to this config), or a mapping of the target file's prompt "
                  "keys (prompts_file, prompts_dataset, prompts_column); null: the target's prompts",
        check=_eval_prompts)
    merge_lora: bool = field(True, doc="save the final model with the LoRA update merged (a plain HF model)")
    batch_size: int = field(64, doc="rows per forward pass", check=positive)
    backward_batch_size: int | None = field(None, doc="rows (whole prompt groups, at least one) back-propagated at "
                                                      "once: bounds the activations held for the backward pass, "
                                                      "the bulk of a training step's memory; null: 8 on a CPU (as "
                                                      "fast as 32 at under half its memory: docs/performance.md, "
                                                      "scaling), batch_size on a GPU (small slices leave it idle)",
                                            check=positive)
    sharding: Literal["none", "full"] = field(
        "none", doc="full: data-parallel processes each keep 1/N of every decoder layer's weights, gradients and "
                    "AdamW state (FSDP2, like ZeRO-3; see docs/distributed.md); needs grad_accum a multiple of the "
                    "number of processes. No effect with one process")
    device: str = field("auto", doc="where the models run: auto (the GPU when torch sees one, else the CPU; "
                                    "`bayeslm train` takes $BAYESLM_DEVICE for auto), cpu, cuda or cuda:N; "
                                    "data-parallel processes each use their own GPU", check=_device)
    report_to: list[str] = field(default_factory=list, doc="experiment trackers that also receive every step's "
                                 "figures, each an optional package: tensorboard, wandb (offline unless "
                                 "WANDB_MODE=online), mlflow (RUN/mlruns unless MLFLOW_TRACKING_URI), trackio; "
                                 "metrics.jsonl is always written", check=trackers.check)



# Sections of earlier versions, and where their keys live now.
MOVED = {"klrl": "objective: {klrl: {...}} (or {rl: {...}} for ppo_epochs and clip); kl_estimator is now kl",
         "dpg": "objective: {dpg: {proposal: ..., baseline: ...}} or objective: {fdpg: {proposal: ..., "
                "divergence: ...}}"}


def load_config(data) -> TrainConfig:
    """A `TrainConfig` from its YAML data, every error naming the key (and the new key of a moved one)."""
    if isinstance(data, dict):
        for key in data:
            if key in MOVED:
                raise ConfigError(f"{key}: this section has moved into the objective; write {MOVED[key]}")
    return load(TrainConfig, data)


def settings_config(objective, lora: LoRA | None, settings: dict) -> TrainConfig:
    """The config of a run set up in Python (`bl.train`, `bl.Trainer`): the objective, LoRA and the settings as
    keyword arguments, the target given apart."""
    data = {"objective": objective, **settings}
    if lora is not None:
        data["lora"] = to_dict(lora)
    return load_config(data)
