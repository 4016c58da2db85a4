"""What a run is made of before its first step: the model π_θ being trained and the target whose prior is π0
(full fine-tuning on a copy, LoRA on the prior's own weights, or another start; precision; gradient
checkpointing), and the learning-rate schedule."""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import replace
from pathlib import Path

import torch

from bayeslm.config import ConfigError
from bayeslm.distributions.lm import LM
from bayeslm.distributions.loading import load_lm, resolve_source
from bayeslm.modelling.prompts import read_prompts
from bayeslm.modelling.target import Target
from bayeslm.modelling.target_file import load_target, parse_target
from bayeslm.training.config import TrainConfig


def models(config: TrainConfig, target: Target, device: torch.device) -> tuple[LM, Target]:
    """The trainable model π_θ and the target whose prior is π0 (under LoRA: the same weights, adapter off), both
    on `device`."""
    prior = target.prior
    prior.model.requires_grad_(False)
    prior.model.to(device)
    if config.model is not None:
        start = load_lm(config.model, batch_size=config.batch_size, chat=prior.chat_spec, device=str(device)).model
    elif config.lora is not None:
        start = prior.model  # the adapter goes on the prior's own weights: no second copy in memory
    else:
        start = copy.deepcopy(prior.model)
    if config.gradient_checkpointing:
        _recompute_layers(start)
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        # GPT-2's projections are Conv1D, weights stored transposed: peft needs fan_in_fan_out (and says so).
        conv1d = any(type(m).__name__ == "Conv1D" for m in start.modules())
        lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=0.0,
                          target_modules=config.lora.target_modules or "all-linear", task_type="CAUSAL_LM",
                          fan_in_fan_out=conv1d)
        start = get_peft_model(start, lora)  # only the adapter is trainable
    else:
        start.requires_grad_(True)
    model = LM(start, prior.tokenizer, chat=prior.chat, system=prior.system, warp=prior.warp,
               batch_size=config.batch_size, name="model", decoding=config.decoding)
    if config.lora is not None and config.model is None:
        # get_peft_model injected the adapter into the prior's own modules, so the prior object itself becomes
        # the adapter-off view: every holder of it (the caller's target too) keeps scoring π0.
        prior.model, prior.adapter_disabled = start, True
    if config.precision == "bf16":
        if model.device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            # On a CPU without AVX512-BF16 or AMX, bf16 products are emulated: a LoRA step runs many times slower
            # than in fp32 (docs/performance.md, `hardware_small`).
            print("bayeslm: warning: precision bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX): "
                  "matrix products are emulated and much slower than fp32; use precision: fp32 here",
                  file=sys.stderr)
        model.autocast = torch.bfloat16
        target = replace(target, prior=target.prior.view(autocast=torch.bfloat16))
    target = replace(target, prior=target.prior.view(decoding=config.decoding))
    return model, target


def _recompute_layers(model):
    """transformers checkpoints layers only in training mode, which `Stepper.backward` switches on around the
    backward pass: the scores stay those of sampling only if no dropout is active."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"gradient_checkpointing: {type(model).__name__} does not support it; set it to false")
    dropout = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    dropout += [key for key in ("attention_dropout", "hidden_dropout", "dropout")
                if isinstance(getattr(model.config, key, None), float) and getattr(model.config, key) > 0]
    if dropout:
        raise ConfigError(f"gradient_checkpointing: the model has active dropout ({', '.join(dropout[:3])}), which "
                          "training mode would switch on and make scores differ from sampling; save the model with "
                          "dropout 0 or set gradient_checkpointing: false")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def schedule(config: TrainConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        if config.schedule == "linear":
            return max(0.0, 1 - progress)
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0
    return factor


def resolve_model(config: TrainConfig, base: Path) -> TrainConfig:
    """The config with `model:` resolved against the config's directory, as `target:` is."""
    return config if config.model is None else replace(config, model=resolve_source(config.model, base))


def eval_prompts(config: TrainConfig, base: Path) -> tuple[list[str], str | None] | None:
    """The held-out prompts of the final scorecard (`eval_prompts`, relative paths against `base`) with the system
    message of their conversations; None: the target's own."""
    spec = config.eval_prompts
    if spec is None:
        return None
    data = {"prompts": spec} if isinstance(spec, list) else {"prompts_file": spec} if isinstance(spec, str) else spec
    return read_prompts(data, base, where="eval_prompts.")


def resolve_target(config: TrainConfig, base: Path) -> Target:
    if isinstance(config.target, dict):
        return parse_target(config.target, base, batch_size=config.batch_size, decoding=config.decoding)
    return load_target(base / config.target, batch_size=config.batch_size, decoding=config.decoding)
